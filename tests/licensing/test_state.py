"""The installed license: re-verified on load, cached briefly, guarded against clock rollback."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytest_django.fixtures import DjangoAssertNumQueries, Settings

from licensing import selectors
from licensing.models import InstalledLicense
from licensing.selectors import license_cache_clear, license_get
from licensing.services import license_install
from licensing.verification import ErrorCode, LicenseError, State, public_key_b64
from tests.licensing.conftest import NOW, MakeLicense

pytestmark = pytest.mark.django_db

EXPIRES = NOW + timedelta(days=60)


@pytest.fixture
def installed(make_license: MakeLicense) -> str:
    """A license issued yesterday that expires 60 days after NOW, installed at NOW."""
    text = make_license(issued_at=NOW - timedelta(days=1), expires_at=EXPIRES, grace_days=14)
    license_install(text=text, now=NOW)
    return text


def test_without_a_license_the_appliance_is_community() -> None:
    info = license_get(now=NOW)
    assert info.state is State.COMMUNITY
    assert "No license is installed" in info.reason
    assert info.customer is None and info.features == () and info.limits == {}
    assert not license_get(now=NOW).feature_enabled("cdr_webhooks")
    assert license_get(now=NOW).limit("webhooks") is None


def test_the_appliance_id_is_created_once() -> None:
    first = license_get(now=NOW).appliance_id
    assert uuid.UUID(first)
    assert license_get(now=NOW).appliance_id == first
    assert InstalledLicense.objects.count() == 1


def test_install_stores_only_the_text_and_reports_details(installed: str) -> None:
    row = InstalledLicense.objects.get()
    assert row.text == installed
    info = license_get(now=NOW)
    assert info.state is State.ACTIVE
    assert (info.customer, info.license_id) == ("Acme Voice", "LIC-TEST-1")
    assert info.features == ("cdr_webhooks",)
    assert info.limits == {"webhooks": 50}
    assert info.expires_at == EXPIRES
    assert info.grace_ends_at == EXPIRES + timedelta(days=14)
    assert info.days_left == 60
    assert info.appliance_id == str(row.appliance_id)
    assert license_get(now=NOW).feature_enabled("cdr_webhooks")
    assert license_get(now=NOW).limit("webhooks") == 50
    assert license_get(now=NOW).limit("users") is None


@pytest.mark.parametrize(
    ("at", "state", "enabled"),
    [
        (EXPIRES - timedelta(days=30, seconds=1), State.ACTIVE, True),
        (EXPIRES - timedelta(days=30), State.EXPIRING, True),
        (EXPIRES, State.GRACE, True),
        (EXPIRES + timedelta(days=14, seconds=-1), State.GRACE, True),
        (EXPIRES + timedelta(days=14), State.EXPIRED, False),
    ],
)
def test_states_follow_the_injected_clock(
    installed: str, at: datetime, state: State, enabled: bool
) -> None:
    info = license_get(now=at)
    assert info.state is state
    assert license_get(now=at).feature_enabled("cdr_webhooks") is enabled
    assert (license_get(now=at).limit("webhooks") == 50) is enabled


def test_reasons_say_what_to_do(installed: str) -> None:
    assert "days left" in license_get(now=EXPIRES - timedelta(days=10)).reason
    assert "grace period" in license_get(now=EXPIRES + timedelta(days=1)).reason
    assert "install a renewed license" in license_get(now=EXPIRES + timedelta(days=20)).reason


def test_perpetual_license(make_license: MakeLicense) -> None:
    license_install(text=make_license(issued_at=NOW, expires_at=None), now=NOW)
    info = license_get(now=NOW + timedelta(days=3650))
    assert info.state is State.ACTIVE
    assert info.expires_at is None and info.days_left is None and "perpetual" in info.reason


def test_a_license_without_limits_sets_no_cap(make_license: MakeLicense) -> None:
    license_install(text=make_license(issued_at=NOW, limits={}), now=NOW)
    assert license_get(now=NOW).limit("webhooks") is None


def test_a_license_without_the_feature_does_not_enable_it(make_license: MakeLicense) -> None:
    license_install(text=make_license(issued_at=NOW, features=[]), now=NOW)
    assert license_get(now=NOW).state is State.ACTIVE
    assert not license_get(now=NOW).feature_enabled("cdr_webhooks")


def test_a_refused_license_leaves_the_installed_one_untouched(
    installed: str, make_license: MakeLicense
) -> None:
    forged = make_license(issued_at=NOW, private_key=Ed25519PrivateKey.generate())
    with pytest.raises(LicenseError) as error:
        license_install(text=forged, now=NOW)
    assert error.value.code == ErrorCode.BAD_SIGNATURE
    assert InstalledLicense.objects.get().text == installed


def test_an_expired_license_is_refused(installed: str, make_license: MakeLicense) -> None:
    old = make_license(
        issued_at=NOW - timedelta(days=100), expires_at=NOW - timedelta(days=50), grace_days=7
    )
    with pytest.raises(LicenseError) as error:
        license_install(text=old, now=NOW)
    assert error.value.code == ErrorCode.EXPIRED
    assert InstalledLicense.objects.get().text == installed


def test_a_license_in_grace_may_be_installed(make_license: MakeLicense) -> None:
    text = make_license(
        issued_at=NOW - timedelta(days=100), expires_at=NOW - timedelta(days=1), grace_days=7
    )
    assert license_install(text=text, now=NOW).state is State.GRACE


def test_a_license_bound_to_this_appliance_installs(make_license: MakeLicense) -> None:
    appliance_id = license_get(now=NOW).appliance_id
    info = license_install(text=make_license(issued_at=NOW, appliance_id=appliance_id), now=NOW)
    assert info.state is State.ACTIVE


def test_a_license_bound_to_another_appliance_is_refused(make_license: MakeLicense) -> None:
    text = make_license(issued_at=NOW, appliance_id=str(uuid.uuid4()))
    with pytest.raises(LicenseError) as error:
        license_install(text=text, now=NOW)
    assert error.value.code == ErrorCode.WRONG_APPLIANCE
    assert InstalledLicense.objects.get().text == ""


def test_the_stored_text_is_re_verified_on_load(installed: str) -> None:
    # Someone edits the table by hand to stretch the license: the signature breaks.
    InstalledLicense.objects.update(text=installed.replace(installed[20:24], "AAAA", 1))
    info = license_get(now=NOW)
    assert info.state is State.COMMUNITY
    assert info.error_code == ErrorCode.BAD_SIGNATURE
    assert info.customer is None and "not valid" in info.reason


def test_removing_the_signing_key_from_the_settings_invalidates_the_license(
    installed: str, settings: Settings
) -> None:
    settings.LICENSE_PUBLIC_KEYS = {
        "other": public_key_b64(Ed25519PrivateKey.generate().public_key())
    }
    info = license_get(now=NOW)
    assert info.state is State.COMMUNITY and info.error_code == ErrorCode.UNKNOWN_KEY


def test_the_state_is_cached_briefly_and_install_refreshes_it(
    make_license: MakeLicense, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    assert license_get().state is State.COMMUNITY
    with django_assert_num_queries(0):
        assert license_get().state is State.COMMUNITY
    license_install(text=make_license())
    assert license_get().state is State.ACTIVE


class Uptime:
    """The monotonic clock the license clock checks jumps against, moved by the test."""

    def __init__(self) -> None:
        self.seconds = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.seconds += delta.total_seconds()


@pytest.fixture
def uptime(monkeypatch: pytest.MonkeyPatch) -> Uptime:
    uptime = Uptime()
    monkeypatch.setattr(selectors, "monotonic", lambda: uptime.seconds)
    return uptime


def high_water() -> datetime | None:
    return InstalledLicense.objects.get().clock_high_water


def test_a_clock_rolled_back_cannot_revive_an_expired_license(
    installed: str, uptime: Uptime, caplog: pytest.LogCaptureFixture
) -> None:
    # The appliance runs through the expiry and the grace period: both clocks agree.
    after_grace = EXPIRES + timedelta(days=20)
    uptime.advance(after_grace - NOW)
    assert license_get(now=after_grace).state is State.EXPIRED
    assert high_water() == after_grace
    with caplog.at_level(logging.WARNING, logger="licensing.selectors"):
        info = license_get(now=NOW)  # the clock is set back 80 days
    assert info.state is State.EXPIRED
    assert info.clock_suspect and "clock" in info.reason
    assert info.evaluated_at == after_grace
    assert "behind the latest time seen" in caplog.text
    assert high_water() == after_grace
    # A new process (nothing in memory) cannot be fooled either.
    license_cache_clear()
    assert license_get(now=NOW + timedelta(days=1)).state is State.EXPIRED


def test_a_six_year_clock_jump_then_back_leaves_a_2030_license_active(
    make_license: MakeLicense, uptime: Uptime, caplog: pytest.LogCaptureFixture
) -> None:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    text = make_license(
        issued_at=datetime(2026, 1, 1, tzinfo=UTC),
        expires_at=datetime(2030, 6, 30, tzinfo=UTC),
        grace_days=14,
    )
    license_install(text=text, now=start)
    jumped = start.replace(year=2032)
    with caplog.at_level(logging.WARNING, logger="licensing.selectors"):
        for minute in range(1, 11):  # ten minutes on the wrong clock, evaluated each minute
            uptime.advance(timedelta(minutes=1))
            during = license_get(now=jumped + timedelta(minutes=minute))
    # Judged at face value while it lasts, but not remembered.
    assert during.state is State.EXPIRED
    uptime.advance(timedelta(minutes=1))
    back = start + timedelta(minutes=11)
    info = license_get(now=back)
    assert info.state is State.ACTIVE and not info.clock_suspect
    assert info.expires_at == datetime(2030, 6, 30, tzinfo=UTC)
    assert high_water() == back
    license_cache_clear()  # and so it stays for every other process
    assert license_get(now=back + timedelta(minutes=1)).state is State.ACTIVE
    assert "more than a day ahead of the latest time seen" in caplog.text


def test_a_jump_ahead_the_clock_keeps_for_a_day_is_remembered(
    installed: str, uptime: Uptime
) -> None:
    # E.g. the date set right after the appliance was off past the grace period.
    jumped = EXPIRES + timedelta(days=30)
    uptime.advance(timedelta(minutes=1))
    assert license_get(now=jumped).state is State.EXPIRED
    assert high_water() == NOW
    uptime.advance(timedelta(hours=23))
    license_get(now=jumped + timedelta(hours=23))
    assert high_water() == NOW  # not yet a day
    uptime.advance(timedelta(hours=1))
    license_get(now=jumped + timedelta(days=1))
    assert high_water() == jumped + timedelta(days=1)
    assert license_get(now=NOW).state is State.EXPIRED


def test_a_clock_that_keeps_jumping_is_never_confirmed(installed: str, uptime: Uptime) -> None:
    for day in range(1, 4):
        uptime.advance(timedelta(hours=12))
        license_get(now=EXPIRES + timedelta(days=30 * day))
    assert high_water() == NOW


def test_a_step_of_under_a_day_is_remembered_at_once(installed: str) -> None:
    license_get(now=NOW + timedelta(hours=20))
    assert high_water() == NOW + timedelta(hours=20)


def test_a_small_clock_step_back_is_not_suspect(installed: str) -> None:
    license_get(now=NOW + timedelta(hours=5))
    info = license_get(now=NOW + timedelta(hours=1))
    assert not info.clock_suspect
    # Judged at the later time all the same, so the state never moves backwards.
    assert info.evaluated_at == NOW + timedelta(hours=5)


def test_a_rolled_back_clock_cannot_install_an_expired_license(make_license: MakeLicense) -> None:
    old = make_license(issued_at=NOW - timedelta(days=40), expires_at=NOW, grace_days=0)
    license_get(now=NOW + timedelta(days=10))
    with pytest.raises(LicenseError) as error:
        license_install(text=old, now=NOW - timedelta(days=1))
    assert error.value.code == ErrorCode.EXPIRED
