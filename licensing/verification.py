"""Offline Call Telemetry licenses: format, Ed25519 signatures, payload rules and states.

A license is one line, ``CTLIC1.<base64url(payload)>.<base64url(signature)>`` without
padding, where ``signature`` is Ed25519 over ``b"CTLIC1." + payload`` and ``payload`` is the
JSON document's bytes. This format is public interface: the vendor's issuing tool and every
customer's license file depend on it, so it must never change meaning.

Plain Python on purpose (no Django): the vendor tools, the appliance and the tests all share
this one implementation of the rules.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PREFIX = "CTLIC1"
SIGNED_PREFIX = b"CTLIC1."
VERSION = 1
WEBHOOKS_FEATURE = "cdr_webhooks"
KNOWN_FEATURES = frozenset({WEBHOOKS_FEATURE})
KNOWN_LIMITS = frozenset({"webhooks"})
EXPIRING_WINDOW = timedelta(days=30)
# The vendor's clock and the appliance's are never exactly in step; a license issued a few
# minutes "in the future" is a clock difference, not a forgery.
ISSUE_CLOCK_SKEW = timedelta(minutes=5)
MAX_LICENSE_CHARS = 16_384
REQUIRED_FIELDS = (
    "v",
    "kid",
    "license_id",
    "customer",
    "issued_at",
    "expires_at",
    "grace_days",
    "features",
    "limits",
)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class ErrorCode(enum.StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    INVALID_PAYLOAD = "invalid_payload"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_APPLIANCE = "wrong_appliance"
    EXPIRED = "expired"


class LicenseError(Exception):
    """A license was refused; ``code`` is for machines, ``reason`` for people."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class State(enum.StrEnum):
    COMMUNITY = "community"
    ACTIVE = "active"
    EXPIRING = "expiring"
    GRACE = "grace"
    EXPIRED = "expired"

    @property
    def in_force(self) -> bool:
        """Whether the license's features and limits apply in this state."""
        return self in (State.ACTIVE, State.EXPIRING, State.GRACE)


@dataclass(frozen=True)
class License:
    kid: str
    license_id: str
    customer: str
    issued_at: datetime
    expires_at: datetime | None
    grace_days: int
    features: frozenset[str]
    limits: Mapping[str, int]
    appliance_id: str | None = None

    @property
    def grace_ends_at(self) -> datetime | None:
        if self.expires_at is None:
            return None
        return self.expires_at + timedelta(days=self.grace_days)


def _fail(code: ErrorCode, reason: str) -> NoReturn:
    raise LicenseError(code, reason)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        _fail(ErrorCode.MALFORMED, f"the {what} is not unpadded base64url text")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Reject non-canonical spellings so one license has exactly one textual form.
    if b64url_encode(data) != text:
        _fail(ErrorCode.MALFORMED, f"the {what} is not canonical base64url text")
    return data


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(public_key_raw(public_key)).hexdigest()[:16]


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key_raw(public_key)).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read a base64 (standard or url-safe, padding optional) raw 32-byte Ed25519 key."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not base64 text") from exc
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes; a raw Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_keys(keys: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    loaded = {}
    for kid, text in keys.items():
        try:
            loaded[kid] = load_public_key(text)
        except ValueError as exc:
            raise ValueError(f"public key {kid!r} {exc}") from exc
    return loaded


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("is not an Ed25519 private key")
    return key


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign_payload_bytes(payload_bytes: bytes, private_key: Ed25519PrivateKey) -> str:
    """Sign already-encoded payload bytes; tests use it to sign deliberately bad payloads."""
    signature = private_key.sign(SIGNED_PREFIX + payload_bytes)
    return f"{PREFIX}.{b64url_encode(payload_bytes)}.{b64url_encode(signature)}"


def issue(
    private_key: Ed25519PrivateKey,
    *,
    kid: str,
    customer: str,
    expires_at: datetime | None,
    features: Iterable[str],
    limits: Mapping[str, int],
    grace_days: int,
    appliance_id: str | None = None,
    license_id: str | None = None,
    issued_at: datetime | None = None,
) -> str:
    """Build and sign a version-1 license line."""
    payload: dict[str, Any] = {
        "v": VERSION,
        "kid": kid,
        "license_id": license_id or f"LIC-{uuid.uuid4()}",
        "customer": customer,
        "issued_at": format_time(issued_at or datetime.now(UTC)),
        "expires_at": format_time(expires_at) if expires_at else None,
        "grace_days": grace_days,
        "features": sorted(set(features)),
        "limits": dict(limits),
    }
    if appliance_id is not None:
        payload["appliance_id"] = appliance_id
    return sign_payload_bytes(encode_payload(payload), private_key)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key appears twice in one JSON object")
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(payload_bytes: bytes) -> Any:
    return json.loads(
        payload_bytes.decode("utf-8"),
        object_pairs_hook=_reject_duplicates,
        parse_constant=_reject_constant,
    )


def _split(text: str) -> tuple[bytes, bytes]:
    text = text.strip()
    if not text:
        _fail(ErrorCode.MALFORMED, "the license text is empty")
    if len(text) > MAX_LICENSE_CHARS:
        _fail(ErrorCode.MALFORMED, f"the license text is longer than {MAX_LICENSE_CHARS} chars")
    parts = text.split(".")
    if parts[0] != PREFIX:
        _fail(
            ErrorCode.MALFORMED,
            f"a license starts with '{PREFIX}.', this text starts with {parts[0][:20]!r}",
        )
    if len(parts) != 3:
        _fail(ErrorCode.MALFORMED, f"expected {PREFIX}.<payload>.<signature> (3 parts)")
    payload_bytes = b64url_decode(parts[1], "payload")
    signature = b64url_decode(parts[2], "signature")
    if not payload_bytes:
        _fail(ErrorCode.MALFORMED, "the payload is empty")
    if len(signature) != 64:
        _fail(ErrorCode.MALFORMED, f"the signature is {len(signature)} bytes, not 64")
    return payload_bytes, signature


def _signed_kid(payload_bytes: bytes) -> str | None:
    """The payload's ``kid``, read only to choose the verifying key; None if unreadable."""
    try:
        document = _parse_json(payload_bytes)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    kid = document.get("kid") if isinstance(document, dict) else None
    return kid if isinstance(kid, str) else None


def _verified(key: Ed25519PublicKey, payload_bytes: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, SIGNED_PREFIX + payload_bytes)
    except InvalidSignature:
        return False
    return True


def _authenticate(
    payload_bytes: bytes, signature: bytes, keys: Mapping[str, Ed25519PublicKey]
) -> str:
    """Check the signature and return the kid; nothing else in the payload is trusted yet."""
    kid = _signed_kid(payload_bytes)
    if kid is None:
        # No readable kid: only a payload some trusted key really signed is "invalid";
        # anything else is a forgery or corruption and is reported as such.
        if any(_verified(key, payload_bytes, signature) for key in keys.values()):
            _fail(ErrorCode.INVALID_PAYLOAD, "the payload is not a JSON object with a 'kid'")
        _fail(ErrorCode.BAD_SIGNATURE, "the signature does not match any trusted key")
    key = keys.get(kid)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        _fail(
            ErrorCode.UNKNOWN_KEY,
            f"the license is signed with key {kid!r}, which this appliance does not trust "
            f"(trusted keys: {known}); check LICENSE_PUBLIC_KEYS",
        )
    if not _verified(key, payload_bytes, signature):
        _fail(
            ErrorCode.BAD_SIGNATURE,
            f"the signature does not match key {kid!r}; the license was altered or corrupted",
        )
    return kid


def _invalid(reason: str) -> NoReturn:
    _fail(ErrorCode.INVALID_PAYLOAD, reason)


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document[name]
    if not isinstance(value, str) or not value.strip():
        _invalid(f"{name!r} must be non-empty text")
    return value


def _time(document: Mapping[str, Any], name: str) -> datetime:
    value = document[name]
    if not isinstance(value, str):
        _invalid(f"{name!r} must be an ISO-8601 date-time text")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _invalid(f"{name!r} is not an ISO-8601 date-time: {value!r}")
    # A time without an offset is UTC: the vendor and the appliance share no time zone.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _validate(document: Any, kid: str) -> License:
    if not isinstance(document, dict):
        _invalid("the payload must be a JSON object")
    if document.get("v") != VERSION:
        _fail(
            ErrorCode.UNSUPPORTED_VERSION,
            f"license version {document.get('v')!r} is not supported (this appliance reads "
            f"version {VERSION}); update the appliance or ask for a version {VERSION} license",
        )
    missing = [name for name in REQUIRED_FIELDS if name not in document]
    if missing:
        _invalid(f"missing field(s): {', '.join(missing)}")
    issued_at = _time(document, "issued_at")
    expires_at = None if document["expires_at"] is None else _time(document, "expires_at")
    if expires_at is not None and expires_at <= issued_at:
        _invalid("'expires_at' must be after 'issued_at'")
    if not _whole_number(document["grace_days"]):
        _invalid("'grace_days' must be a whole number of days, 0 or more")
    features = document["features"]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        _invalid("'features' must be a list of feature names")
    limits = document["limits"]
    if not isinstance(limits, dict) or not all(_whole_number(n) for n in limits.values()):
        _invalid("'limits' must be an object of whole numbers, e.g. {\"webhooks\": 50}")
    appliance_id = document.get("appliance_id")
    if appliance_id is not None:
        try:
            appliance_id = str(uuid.UUID(str(appliance_id)))
        except ValueError:
            _invalid(f"'appliance_id' is not a UUID: {appliance_id!r}")
    return License(
        kid=kid,
        license_id=_text(document, "license_id"),
        customer=_text(document, "customer"),
        issued_at=issued_at,
        expires_at=expires_at,
        grace_days=document["grace_days"],
        features=frozenset(features),
        limits=dict(limits),
        appliance_id=appliance_id,
    )


def verify(
    text: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime,
    appliance_id: str | None = None,
) -> License:
    """Authenticate and validate a license line, or raise LicenseError.

    Expiry is not an error here: an expired license is still genuine, and its state
    (``license_state``) says what it allows.
    """
    payload_bytes, signature = _split(text)
    kid = _authenticate(payload_bytes, signature, keys)
    lic = _validate(_parse_json(payload_bytes), kid)
    if now < lic.issued_at - ISSUE_CLOCK_SKEW:
        _fail(
            ErrorCode.NOT_YET_VALID,
            f"the license was issued for {format_time(lic.issued_at)}, after this appliance's "
            f"clock ({format_time(now)}); check the appliance's date and time",
        )
    if lic.appliance_id is not None and lic.appliance_id != _normalise_uuid(appliance_id):
        _fail(
            ErrorCode.WRONG_APPLIANCE,
            f"the license is bound to appliance {lic.appliance_id}, but this appliance is "
            f"{appliance_id}; ask the vendor for a license for this appliance id",
        )
    return lic


def _normalise_uuid(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return value


def license_state(lic: License | None, now: datetime) -> State:
    """What a (verified) license allows at ``now``; None means no valid license."""
    if lic is None:
        return State.COMMUNITY
    if lic.expires_at is None:
        return State.ACTIVE
    if now < lic.expires_at:
        return State.EXPIRING if lic.expires_at - now <= EXPIRING_WINDOW else State.ACTIVE
    return State.GRACE if now < lic.expires_at + timedelta(days=lic.grace_days) else State.EXPIRED


def days_left(lic: License | None, now: datetime) -> int | None:
    """Whole days until expiry (0 once expired); None when there is no expiry."""
    if lic is None or lic.expires_at is None:
        return None
    return max(0, (lic.expires_at - now).days)
