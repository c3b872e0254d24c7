"""Which public keys this appliance trusts to sign licenses."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from licensing.verification import load_public_keys

# The vendor's signing keys (public halves only; the private keys never enter this
# repository). LICENSE_PUBLIC_KEYS replaces this whole set, e.g. for a private vendor.
VENDOR_PUBLIC_KEYS: dict[str, str] = {
    "3010f0e53d165c3d": "zC4/W/xbY1pn1iiGSPPn/RlUs//klc1Nm5HzeA0E6Kk=",
}


def trusted_keys() -> dict[str, Ed25519PublicKey]:
    """The trusted keys by kid, read from settings at call time (tests override them)."""
    configured: dict[str, str] | None = settings.LICENSE_PUBLIC_KEYS
    try:
        return load_public_keys(VENDOR_PUBLIC_KEYS if configured is None else configured)
    except ValueError as exc:
        source = "built-in vendor keys" if configured is None else "LICENSE_PUBLIC_KEYS"
        raise ImproperlyConfigured(f"Invalid setting {source}: {exc}") from exc
