"""The pure license rules: format, signatures, payload checks, states at a given time."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from licensing.keys import VENDOR_PUBLIC_KEYS, trusted_keys
from licensing.verification import (
    SIGNED_PREFIX,
    ErrorCode,
    License,
    LicenseError,
    State,
    days_left,
    license_state,
    load_public_key,
    verify,
)
from tests.licensing.conftest import NOW, MakeLicense, flip_byte, payload_of, sign_json

Keys = dict[str, Ed25519PublicKey]


def rejected(text: str, keys: Keys, appliance_id: str | None = None) -> LicenseError:
    with pytest.raises(LicenseError) as info:
        verify(text, keys, now=NOW, appliance_id=appliance_id)
    return info.value


def test_round_trip_keeps_every_field(make_license: MakeLicense, keys: Keys, kid: str) -> None:
    appliance = str(uuid.uuid4())
    text = make_license(
        issued_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=100),
        appliance_id=appliance,
        limits={"webhooks": 7},
    )
    lic = verify(text, keys, now=NOW, appliance_id=appliance)
    assert (lic.kid, lic.customer, lic.license_id) == (kid, "Acme Voice", "LIC-TEST-1")
    assert lic.features == frozenset({"cdr_webhooks"})
    assert lic.limits == {"webhooks": 7}
    assert lic.expires_at == (NOW + timedelta(days=100)).replace(microsecond=0)
    assert lic.grace_days == 14
    assert lic.appliance_id == appliance


def test_format_is_prefix_payload_signature_over_prefixed_json(
    make_license: MakeLicense, keys: Keys, kid: str
) -> None:
    text = make_license(issued_at=NOW)
    prefix, payload_b64, signature_b64 = text.split(".")
    assert prefix == "CTLIC1"
    assert "=" not in payload_b64 + signature_b64
    payload = base64.urlsafe_b64decode(payload_b64 + "==")
    signature = base64.urlsafe_b64decode(signature_b64 + "==")
    assert json.loads(payload)["v"] == 1
    keys[kid].verify(signature, SIGNED_PREFIX + payload)  # raises if the contract changed


def test_surrounding_whitespace_is_ignored(make_license: MakeLicense, keys: Keys) -> None:
    assert verify(f"\n  {make_license(issued_at=NOW)}\r\n", keys, now=NOW)


def test_it_rejects_a_flipped_byte_in_the_payload(make_license: MakeLicense, keys: Keys) -> None:
    text = make_license(issued_at=NOW)
    # Flip a byte of the customer name: the JSON and its kid stay readable.
    customer_at = base64.urlsafe_b64decode(text.split(".")[1] + "==").index(b"Acme")
    error = rejected(flip_byte(text, 1, customer_at), keys)
    assert error.code == ErrorCode.BAD_SIGNATURE


def test_it_rejects_a_payload_flipped_into_unreadable_json(
    make_license: MakeLicense, keys: Keys
) -> None:
    error = rejected(flip_byte(make_license(issued_at=NOW), 1, 0), keys)
    assert error.code == ErrorCode.BAD_SIGNATURE
    assert "does not match any trusted key" in error.reason


def test_it_rejects_a_flipped_byte_in_the_signature(make_license: MakeLicense, keys: Keys) -> None:
    error = rejected(flip_byte(make_license(issued_at=NOW), 2, 10), keys)
    assert error.code == ErrorCode.BAD_SIGNATURE
    assert "altered or corrupted" in error.reason


def test_it_rejects_a_license_signed_by_another_key_under_a_trusted_kid(
    make_license: MakeLicense, keys: Keys
) -> None:
    forged = make_license(issued_at=NOW, private_key=Ed25519PrivateKey.generate())
    assert rejected(forged, keys).code == ErrorCode.BAD_SIGNATURE


def test_it_rejects_an_unknown_kid(make_license: MakeLicense, keys: Keys) -> None:
    error = rejected(make_license(issued_at=NOW, kid="someone-else"), keys)
    assert error.code == ErrorCode.UNKNOWN_KEY
    assert "'someone-else'" in error.reason and "LICENSE_PUBLIC_KEYS" in error.reason


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("CTLIC1.", "CTLIC2.", 1),
        lambda t: t.replace("CTLIC1.", "", 1),
        lambda t: t + ".extra",
        lambda t: "",
        lambda t: "   \n",
        lambda t: t.replace(".", ".*", 1),  # not base64url
        lambda t: t.replace(".", ".+", 1),  # standard base64, not url-safe
        lambda t: t + "==",  # padding
        lambda t: t[:-10],  # truncated signature
        lambda t: t.rsplit(".", 1)[0] + ".A",  # impossible base64 length
        lambda t: "CTLIC1.." + t.rsplit(".", 1)[1],  # empty payload
        lambda t: t + "A" * 20000,
    ],
    ids=[
        "other-prefix",
        "no-prefix",
        "four-parts",
        "empty",
        "blank",
        "bad-char",
        "std-base64",
        "padding",
        "short-signature",
        "bad-length",
        "empty-payload",
        "too-long",
    ],
)
def test_it_rejects_malformed_text(
    make_license: MakeLicense, keys: Keys, mangle: Callable[[str], str]
) -> None:
    error = rejected(mangle(make_license(issued_at=NOW)), keys)
    assert error.code == ErrorCode.MALFORMED
    assert error.reason


def test_unknown_prefix_reason_quotes_what_was_found(keys: Keys) -> None:
    error = rejected("-----BEGIN PGP MESSAGE-----", keys)
    assert "CTLIC1." in error.reason and "BEGIN PGP" in error.reason


def test_it_rejects_signed_bad_json_as_invalid_payload(
    signing_key: Ed25519PrivateKey, keys: Keys
) -> None:
    error = rejected(sign_json(signing_key, b'{"v": 1, "kid": '), keys)
    assert error.code == ErrorCode.INVALID_PAYLOAD


def test_it_rejects_signed_json_that_is_not_an_object(
    signing_key: Ed25519PrivateKey, keys: Keys
) -> None:
    assert rejected(sign_json(signing_key, b"[1, 2]"), keys).code == ErrorCode.INVALID_PAYLOAD


def test_it_rejects_unsupported_versions(
    signing_key: Ed25519PrivateKey, keys: Keys, kid: str
) -> None:
    error = rejected(sign_json(signing_key, payload_of(kid, v=2)), keys)
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert "version 2" in error.reason


@pytest.mark.parametrize(
    "field",
    ["license_id", "customer", "issued_at", "expires_at", "grace_days", "features", "limits"],
)
def test_it_rejects_missing_fields(
    signing_key: Ed25519PrivateKey, keys: Keys, kid: str, field: str
) -> None:
    payload = payload_of(kid)
    del payload[field]
    error = rejected(sign_json(signing_key, payload), keys)
    assert error.code == ErrorCode.INVALID_PAYLOAD
    assert field in error.reason


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"customer": ""}, "customer"),
        ({"license_id": 5}, "license_id"),
        ({"issued_at": "yesterday"}, "issued_at"),
        ({"expires_at": 20320101}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00Z"}, "after"),
        ({"grace_days": -1}, "grace_days"),
        ({"grace_days": True}, "grace_days"),
        ({"features": "cdr_webhooks"}, "features"),
        ({"limits": {"webhooks": "50"}}, "limits"),
        ({"limits": [50]}, "limits"),
        ({"appliance_id": "not-a-uuid"}, "appliance_id"),
    ],
)
def test_it_rejects_wrongly_typed_fields(
    signing_key: Ed25519PrivateKey, keys: Keys, kid: str, overrides: dict, names: str
) -> None:
    error = rejected(sign_json(signing_key, payload_of(kid, **overrides)), keys)
    assert error.code == ErrorCode.INVALID_PAYLOAD
    assert names in error.reason


def test_it_rejects_duplicate_json_keys(
    signing_key: Ed25519PrivateKey, keys: Keys, kid: str
) -> None:
    body = json.dumps(payload_of(kid))[:-1] + ', "customer": "Other"}'
    assert rejected(sign_json(signing_key, body.encode()), keys).code == ErrorCode.INVALID_PAYLOAD


def test_it_rejects_a_license_not_yet_valid(make_license: MakeLicense, keys: Keys) -> None:
    text = make_license(issued_at=NOW + timedelta(minutes=5, seconds=1))
    error = rejected(text, keys)
    assert error.code == ErrorCode.NOT_YET_VALID
    assert "clock" in error.reason


def test_a_few_minutes_of_clock_skew_is_tolerated(make_license: MakeLicense, keys: Keys) -> None:
    assert verify(make_license(issued_at=NOW + timedelta(minutes=5)), keys, now=NOW)


def test_it_rejects_a_license_for_another_appliance(make_license: MakeLicense, keys: Keys) -> None:
    bound_to = str(uuid.uuid4())
    text = make_license(issued_at=NOW, appliance_id=bound_to)
    error = rejected(text, keys, appliance_id=str(uuid.uuid4()))
    assert error.code == ErrorCode.WRONG_APPLIANCE
    assert bound_to in error.reason


def test_appliance_ids_compare_as_uuids(make_license: MakeLicense, keys: Keys) -> None:
    bound_to = uuid.uuid4()
    text = make_license(issued_at=NOW, appliance_id=str(bound_to).upper())
    assert verify(text, keys, now=NOW, appliance_id=bound_to.hex).appliance_id == str(bound_to)


def test_unknown_payload_keys_are_ignored(
    signing_key: Ed25519PrivateKey, keys: Keys, kid: str
) -> None:
    text = sign_json(signing_key, payload_of(kid, support_tier="gold"))
    assert verify(text, keys, now=NOW).customer == "Acme Voice"


def test_times_without_offset_are_utc(signing_key: Ed25519PrivateKey, keys: Keys, kid: str) -> None:
    text = sign_json(signing_key, payload_of(kid, expires_at="2032-01-01T00:00:00"))
    lic = verify(text, keys, now=NOW)
    assert lic.expires_at is not None and lic.expires_at.utcoffset() == timedelta(0)


# --- states -----------------------------------------------------------------------------


@pytest.fixture
def expiring_license(make_license: MakeLicense, keys: Keys) -> License:
    text = make_license(issued_at=NOW - timedelta(days=300), expires_at=NOW, grace_days=14)
    return verify(text, keys, now=NOW - timedelta(days=299))


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (-timedelta(days=100), State.ACTIVE),
        (-timedelta(days=30, seconds=1), State.ACTIVE),
        (-timedelta(days=30), State.EXPIRING),
        (-timedelta(seconds=1), State.EXPIRING),
        (timedelta(0), State.GRACE),
        (timedelta(days=14, seconds=-1), State.GRACE),
        (timedelta(days=14), State.EXPIRED),
        (timedelta(days=400), State.EXPIRED),
    ],
)
def test_state_boundaries(expiring_license: License, offset: timedelta, state: State) -> None:
    # The fixture's license expires exactly at NOW with 14 grace days.
    assert license_state(expiring_license, NOW + offset) is state


def test_no_grace_days_means_expired_at_expiry(make_license: MakeLicense, keys: Keys) -> None:
    lic = verify(
        make_license(issued_at=NOW - timedelta(days=1), expires_at=NOW, grace_days=0), keys, now=NOW
    )
    assert license_state(lic, NOW - timedelta(seconds=1)) is State.EXPIRING
    assert license_state(lic, NOW) is State.EXPIRED


def test_no_license_is_community() -> None:
    assert license_state(None, NOW) is State.COMMUNITY
    assert not State.COMMUNITY.in_force and not State.EXPIRED.in_force
    assert State.ACTIVE.in_force and State.EXPIRING.in_force and State.GRACE.in_force


def test_perpetual_license_is_active_forever(make_license: MakeLicense, keys: Keys) -> None:
    lic = verify(make_license(issued_at=NOW, expires_at=None), keys, now=NOW)
    assert lic.expires_at is None and lic.grace_ends_at is None
    assert license_state(lic, NOW + timedelta(days=365 * 50)) is State.ACTIVE
    assert days_left(lic, NOW) is None


def test_days_left(expiring_license: License) -> None:
    assert days_left(expiring_license, NOW - timedelta(days=30)) == 30
    assert days_left(expiring_license, NOW - timedelta(days=29, hours=1)) == 29
    assert days_left(expiring_license, NOW - timedelta(seconds=1)) == 0
    assert days_left(expiring_license, NOW + timedelta(days=3)) == 0
    assert days_left(None, NOW) is None


# --- trusted keys -----------------------------------------------------------------------


def test_built_in_vendor_keys_are_used_when_the_setting_is_unset(settings: Settings) -> None:
    settings.LICENSE_PUBLIC_KEYS = None
    assert set(trusted_keys()) == set(VENDOR_PUBLIC_KEYS)


def test_setting_replaces_the_vendor_keys(kid: str) -> None:
    assert set(trusted_keys()) == {kid}


def test_a_bad_configured_key_names_the_setting(settings: Settings) -> None:
    settings.LICENSE_PUBLIC_KEYS = {"k1": base64.b64encode(b"short").decode()}
    with pytest.raises(ImproperlyConfigured, match=r"LICENSE_PUBLIC_KEYS.*'k1'.*32 bytes"):
        trusted_keys()


def test_public_keys_load_from_standard_or_url_safe_base64(signing_key: Ed25519PrivateKey) -> None:
    raw = signing_key.public_key()
    standard = base64.b64encode(raw.public_bytes_raw()).decode()
    url_safe = base64.urlsafe_b64encode(raw.public_bytes_raw()).decode().rstrip("=")
    assert load_public_key(standard).public_bytes_raw() == raw.public_bytes_raw()
    assert load_public_key(url_safe).public_bytes_raw() == raw.public_bytes_raw()
    with pytest.raises(ValueError, match="not base64"):
        load_public_key("@@@@")
