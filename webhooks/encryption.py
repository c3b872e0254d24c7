"""Secrets at rest: signing secrets, header values and credentials are stored encrypted.

Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`) with keys derived from `SECRET_KEY` by
HKDF under a fixed context, so the database alone — a dump, a backup, a replica — never
holds a secret in clear, and no second key has to be managed. Rotation: the new key goes into
`SECRET_KEY`, the old one into `SECRET_KEY_FALLBACKS` (Django's own setting); values still
encrypted with a fallback are read through `MultiFernet`, and `manage.py
reencrypt_secrets` rewrites every one with the new key, after which the fallback can go.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction

# Changing it would make every stored secret unreadable: it is part of the key.
_CONTEXT = b"calltelemetry/webhooks: secrets at rest, fernet v1"


class SecretUnreadable(ImproperlyConfigured):
    """A stored value was encrypted with a key that is neither SECRET_KEY nor a fallback."""


def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


_lock = threading.Lock()
_cipher: tuple[tuple[str, ...], MultiFernet] | None = None


def cipher() -> MultiFernet:
    """The current key first (it encrypts), then the fallbacks (they only decrypt)."""
    global _cipher
    keys = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    cached = _cipher
    if cached is None or cached[0] != keys:
        with _lock:
            cached = _cipher = (keys, MultiFernet([_fernet(key) for key in keys]))
    return cached[1]


def encrypt(value: str) -> str:
    """`value` encrypted with the current key; "" stays "" (no secret is not a secret)."""
    return cipher().encrypt(value.encode()).decode() if value else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return cipher().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "a stored webhook secret cannot be decrypted: SECRET_KEY changed; put the previous "
            "key in SECRET_KEY_FALLBACKS (then run `manage.py reencrypt_secrets`)"
        ) from exc


class EncryptedTextField(models.TextField):
    """Text that is encrypted on its way into the database and decrypted on its way out.

    Each write encrypts anew (a random IV): equal secrets do not look equal in the table, and
    the column can only be compared with "" (empty is stored as is)."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value) if isinstance(value, str) else value

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return decrypt(value) if value else value


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with encrypted columns, and those columns."""
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found


def secrets_reencrypt() -> int:
    """Rewrite every encrypted value with the current SECRET_KEY; returns the rows rewritten.
    Reading decrypts with whichever key fits, writing encrypts with the first."""
    rewritten = 0
    with transaction.atomic():
        for model, names in encrypted_fields():
            for row in model._default_manager.select_for_update().only("pk", *names):
                model._default_manager.filter(pk=row.pk).update(
                    **{name: getattr(row, name) for name in names}
                )
                rewritten += 1
    return rewritten
