"""What the webhook engine asks the license: may webhooks run, and how many."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from rest_framework.views import exception_handler

from licensing.gating import (
    LicenseRequired,
    enabled_webhooks_limit,
    require_webhooks_license,
    webhooks_license_problem,
)
from licensing.services import license_install
from licensing.verification import State
from tests.licensing.conftest import NOW, MakeLicense

pytestmark = pytest.mark.django_db

EXPIRES = NOW + timedelta(days=60)


@pytest.fixture
def installed(make_license: MakeLicense) -> None:
    text = make_license(issued_at=NOW, expires_at=EXPIRES, grace_days=14, limits={"webhooks": 3})
    license_install(text=text, now=NOW)


def test_community_names_the_state_and_how_to_install() -> None:
    problem = webhooks_license_problem(now=NOW)
    assert problem is not None
    assert "license state: community" in problem
    assert "license_install" in problem and "/api/v1/license/" in problem


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    "at", [NOW, EXPIRES - timedelta(days=1), EXPIRES + timedelta(days=13)], ids=str
)
def test_webhooks_are_allowed_while_the_license_is_in_force(at: datetime) -> None:
    assert webhooks_license_problem(now=at) is None
    require_webhooks_license(now=at)
    assert enabled_webhooks_limit(now=at) == 3


@pytest.mark.usefixtures("installed")
def test_an_expired_license_stops_webhooks() -> None:
    after = EXPIRES + timedelta(days=14)
    problem = webhooks_license_problem(now=after)
    assert problem is not None and "license state: expired" in problem
    assert "renewed license" in problem
    assert enabled_webhooks_limit(now=after) is None


def test_a_license_without_the_feature_says_so(make_license: MakeLicense) -> None:
    license_install(text=make_license(issued_at=NOW, features=[]), now=NOW)
    problem = webhooks_license_problem(now=NOW)
    assert problem is not None
    assert "license state: active" in problem and "cdr_webhooks" in problem


def test_a_license_without_a_webhook_limit_sets_no_cap(make_license: MakeLicense) -> None:
    license_install(text=make_license(issued_at=NOW, limits={}), now=NOW)
    assert enabled_webhooks_limit(now=NOW) is None


def test_license_required_is_a_403_naming_the_state_and_what_to_do() -> None:
    with pytest.raises(LicenseRequired) as raised:
        require_webhooks_license(now=NOW)
    response = exception_handler(raised.value, {})
    assert response is not None and response.status_code == 403
    assert response.data["code"] == "license_required"
    assert response.data["license_state"] == State.COMMUNITY
    assert response.data["detail"] == webhooks_license_problem(now=NOW)
