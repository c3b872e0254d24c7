from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pytest_django.fixtures import Settings

from licensing.selectors import license_cache_clear
from licensing.verification import issue, key_id, public_key_b64, sign_payload_bytes

# A fixed clock for the pure and selector tests, far from the machine's real clock.
NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)

MakeLicense = Callable[..., str]


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def kid(signing_key: Ed25519PrivateKey) -> str:
    return key_id(signing_key.public_key())


@pytest.fixture
def keys(signing_key: Ed25519PrivateKey, kid: str) -> dict[str, Ed25519PublicKey]:
    return {kid: signing_key.public_key()}


@pytest.fixture(autouse=True)
def trusted(settings: Settings, signing_key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    """Every test trusts its own key instead of the vendor's."""
    settings.LICENSE_PUBLIC_KEYS = {kid: public_key_b64(signing_key.public_key())}
    return settings.LICENSE_PUBLIC_KEYS


@pytest.fixture(autouse=True)
def fresh_license_cache() -> Iterator[None]:
    # The state cache is per process and outlives each test's database transaction.
    license_cache_clear()
    yield
    license_cache_clear()


@pytest.fixture
def make_license(signing_key: Ed25519PrivateKey, kid: str) -> MakeLicense:
    """A valid license, issued an hour ago (real clock) for a year, unless overridden."""

    def make(**overrides: Any) -> str:
        issued_at = overrides.pop("issued_at", datetime.now(UTC) - timedelta(hours=1))
        fields: dict[str, Any] = {
            "kid": kid,
            "customer": "Acme Voice",
            "expires_at": issued_at + timedelta(days=365),
            "features": ["cdr_webhooks"],
            "limits": {"webhooks": 50},
            "grace_days": 14,
            "license_id": "LIC-TEST-1",
            "issued_at": issued_at,
        }
        fields.update(overrides)
        key = fields.pop("private_key", signing_key)
        return issue(key, **fields)

    return make


def payload_of(kid: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": 1,
        "kid": kid,
        "license_id": "LIC-TEST-1",
        "customer": "Acme Voice",
        "issued_at": "2031-01-01T00:00:00Z",
        "expires_at": "2032-01-01T00:00:00Z",
        "grace_days": 14,
        "features": ["cdr_webhooks"],
        "limits": {"webhooks": 50},
    }
    payload.update(overrides)
    return payload


def sign_json(private_key: Ed25519PrivateKey, payload: dict[str, Any] | bytes) -> str:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return sign_payload_bytes(data, private_key)


def flip_byte(text: str, part: int, index: int) -> str:
    """Flip the low bit of one decoded byte of a license part (1 payload, 2 signature)."""
    parts = text.split(".")
    data = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    data[index] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()
    return ".".join(parts)
