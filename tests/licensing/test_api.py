"""GET/PUT /api/v1/license/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from licensing.models import InstalledLicense
from licensing.services import license_install
from tests.licensing.conftest import MakeLicense

pytestmark = pytest.mark.django_db

URL = "/api/v1/license/"


def client_for(django_user_model: Any, *, staff: bool) -> APIClient:
    user = django_user_model.objects.create_user(
        username="staff" if staff else "viewer", password="pw-123456", is_staff=staff
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def staff(django_user_model: Any) -> APIClient:
    return client_for(django_user_model, staff=True)


@pytest.fixture
def viewer(django_user_model: Any) -> APIClient:
    return client_for(django_user_model, staff=False)


def test_anonymous_requests_are_refused() -> None:
    client = APIClient()
    assert client.get(URL).status_code == 401
    assert client.put(URL, {"license": "CTLIC1.x.y"}, format="json").status_code == 401


def test_any_signed_in_user_reads_the_community_state(viewer: APIClient) -> None:
    response = viewer.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "community"
    assert body["customer"] is None and body["features"] == [] and body["limits"] == {}
    assert body["appliance_id"] == str(InstalledLicense.objects.get().appliance_id)


def test_the_details_never_include_the_signed_text(
    viewer: APIClient, make_license: MakeLicense
) -> None:
    text = make_license(expires_at=datetime.now(UTC) + timedelta(days=10))
    license_install(text=text)
    body = viewer.get(URL).json()
    assert body["state"] == "expiring"
    assert body["customer"] == "Acme Voice" and body["license_id"] == "LIC-TEST-1"
    assert body["features"] == ["cdr_webhooks"] and body["limits"] == {"webhooks": 50}
    assert body["days_left"] == 9 and body["grace_days"] == 14
    assert body["expires_at"] and body["issued_at"] and body["grace_ends_at"]
    assert body["clock_suspect"] is False and body["evaluated_at"]
    payload, signature = text.split(".")[1:]
    assert payload not in str(body) and signature not in str(body)


def test_staff_install_a_license(staff: APIClient, make_license: MakeLicense) -> None:
    response = staff.put(URL, {"license": make_license()}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "active"
    assert staff.get(URL).json()["customer"] == "Acme Voice"


def test_non_staff_may_not_install(viewer: APIClient, make_license: MakeLicense) -> None:
    response = viewer.put(URL, {"license": make_license()}, format="json")
    assert response.status_code == 403
    assert not InstalledLicense.objects.exclude(text="").exists()


def test_a_bad_license_is_a_400_with_the_reason_and_changes_nothing(
    staff: APIClient, make_license: MakeLicense, kid: str
) -> None:
    good = make_license()
    license_install(text=good)
    forged = make_license(private_key=Ed25519PrivateKey.generate())
    response = staff.put(URL, {"license": forged}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"the signature does not match key {kid!r}; the license was altered or corrupted",
        "code": "bad_signature",
    }
    assert InstalledLicense.objects.get().text == good


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"license": "hello"}, "malformed"),
        ({"license": "CTLIC1.e30.AAAA"}, "malformed"),
    ],
)
def test_malformed_licenses_are_400(staff: APIClient, body: dict[str, str], code: str) -> None:
    response = staff.put(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["detail"]


def test_a_missing_license_field_is_a_400(staff: APIClient) -> None:
    response = staff.put(URL, {}, format="json")
    assert response.status_code == 400
    assert "license" in response.json()


def test_the_schema_describes_both_bodies(staff: APIClient) -> None:
    schema = staff.get("/api/v1/schema/", {"format": "json"}).json()
    put = schema["paths"][URL]["put"]
    assert "LicenseInstall" in str(put["requestBody"])
    assert "LicenseInstallError" in str(put["responses"]["400"])
    assert "LicenseRejected" in str(schema["components"]["schemas"]["LicenseInstallError"])
    assert "License" in str(schema["paths"][URL]["get"]["responses"]["200"])


def test_a_blank_license_answers_the_documented_400(staff: APIClient) -> None:
    # Found by tests/test_schema_fuzz.py: the schema only described the refused-license body.
    from drf_spectacular.generators import SchemaGenerator

    response = staff.put("/api/v1/license/", {"license": ""}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"license"}
    schema = SchemaGenerator().get_schema(request=None, public=True)
    body = schema["paths"]["/api/v1/license/"]["put"]["responses"]["400"]["content"]
    error = schema["components"]["schemas"]["LicenseInstallError"]
    assert body["application/json"]["schema"]["$ref"].endswith("/LicenseInstallError")
    assert len(error["oneOf"]) == 2
