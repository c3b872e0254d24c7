"""The admin License page, its install form, and the expiry banner on every admin page."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.test import Client
from pytest_django.fixtures import Settings

import licensing
from licensing.models import InstalledLicense
from licensing.selectors import license_get
from licensing.services import license_install
from tests.licensing.conftest import MakeLicense

pytestmark = pytest.mark.django_db

URL = "/admin/licensing/installedlicense/"


def test_the_page_shows_the_state_and_appliance_id(admin_client: Client) -> None:
    response = admin_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "community" in page
    assert str(InstalledLicense.objects.get().appliance_id) in page
    assert 'id="license-install"' in page


def test_the_form_installs_a_license(admin_client: Client, make_license: MakeLicense) -> None:
    response = admin_client.post(URL, {"license": make_license()}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "License LIC-TEST-1 installed." in page and "Acme Voice" in page
    assert license_get().state == "active"


def test_the_form_shows_why_a_license_was_refused(
    admin_client: Client, make_license: MakeLicense
) -> None:
    forged = make_license(private_key=Ed25519PrivateKey.generate())
    response = admin_client.post(URL, {"license": forged})
    assert response.status_code == 200
    page = response.content.decode()
    assert "License refused (bad_signature)" in page
    assert InstalledLicense.objects.get().text == ""


def test_staff_without_permission_cannot_see_or_install(
    client: Client, django_user_model: Any, make_license: MakeLicense
) -> None:
    user = django_user_model.objects.create_user(username="clerk", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"license": make_license()}).status_code == 403


def test_the_row_cannot_be_added_deleted_or_edited_field_by_field(admin_client: Client) -> None:
    row = InstalledLicense.load()
    assert admin_client.get(f"{URL}add/").status_code == 403
    assert admin_client.get(f"{URL}{row.pk}/delete/").status_code == 403
    response = admin_client.get(f"{URL}{row.pk}/change/")
    assert response.status_code == 302 and response["Location"] == URL


@pytest.fixture
def banner_templates(settings: Settings) -> None:
    """Make licensing's admin/base_site.html win, as the project's settings must."""
    templates = copy.deepcopy(settings.TEMPLATES)
    templates[0]["DIRS"] = [Path(licensing.__file__).parent / "templates", *templates[0]["DIRS"]]
    settings.TEMPLATES = templates


@pytest.mark.usefixtures("banner_templates")
@pytest.mark.parametrize(
    ("expires_in", "grace_days", "banner"),
    [
        (timedelta(days=200), 14, None),
        (timedelta(days=10), 14, "License expiring"),
        (timedelta(days=-1), 14, "License grace"),
    ],
)
def test_the_banner_warns_on_every_admin_page(
    admin_client: Client,
    make_license: MakeLicense,
    expires_in: timedelta,
    grace_days: int,
    banner: str | None,
) -> None:
    now = datetime.now(UTC)
    text = make_license(
        issued_at=now - timedelta(days=30), expires_at=now + expires_in, grace_days=grace_days
    )
    license_install(text=text)
    for page in ("/admin/", "/admin/auth/user/", URL):
        content = admin_client.get(page).content.decode()
        if banner is None:
            assert "license-banner" not in content
        else:
            assert banner in content and "Manage the license" in content


@pytest.mark.usefixtures("banner_templates")
def test_the_banner_shows_an_expired_license_as_an_error(
    admin_client: Client, make_license: MakeLicense
) -> None:
    # A license installed long ago that has run out since: written as install left it.
    now = datetime.now(UTC)
    expired = make_license(issued_at=now - timedelta(days=400), expires_at=now - timedelta(days=30))
    InstalledLicense.load()
    InstalledLicense.objects.update(text=expired)
    content = admin_client.get("/admin/").content.decode()
    assert '<li class="error">License expired' in content


@pytest.mark.usefixtures("banner_templates")
def test_the_login_page_shows_no_license_details(client: Client, make_license: MakeLicense) -> None:
    now = datetime.now(UTC)
    license_install(text=make_license(issued_at=now - timedelta(days=30), expires_at=now))
    assert license_get().state == "grace"
    assert "license-banner" not in client.get("/admin/login/").content.decode()
