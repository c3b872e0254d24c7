"""Checking a webhook's `auth` object and TLS settings before they are saved.

Both return the model's column values and DRF-shaped errors, for `webhooks.validation` to
fold into a whole definition. Secret members (password, token, client_secret, client_key)
are write-only: they are read back as the mask, and the mask sent back keeps the stored value.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhooks import http
from webhooks.models import Webhook
from webhooks.redaction import MASK, MaskedUrl, url_redacted, url_restored

# API member → model column.
AUTH_COLUMNS = {
    "username": "auth_username",
    "password": "auth_password",
    "token": "auth_token",
    "token_url": "auth_token_url",
    "client_id": "auth_client_id",
    "client_secret": "auth_client_secret",
    "scope": "auth_scope",
}
SECRET_MEMBERS = ("password", "token", "client_secret")
MEMBERS_OF = {
    Webhook.AuthType.NONE: (),
    Webhook.AuthType.BASIC: ("username", "password"),
    Webhook.AuthType.BEARER: ("token",),
    Webhook.AuthType.OAUTH2: ("token_url", "client_id", "client_secret", "scope"),
}
OPTIONAL = ("scope",)
LIMITS = {
    "username": 200,
    "password": 1000,
    "token": 8192,
    "token_url": 2000,
    "client_id": 200,
    "client_secret": 1000,
    "scope": 500,
}
# What an HTTP header (Basic, Bearer) or a form field can carry: no control characters.
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # a bearer token: visible ASCII, no spaces

Errors = dict[str, Any]


def auth_shown(webhook: Webhook) -> dict[str, str | None]:
    """The `auth` object as read: secret members are the mask when set, else null."""
    shown: dict[str, str | None] = {"type": webhook.auth_type}
    for member, column in AUTH_COLUMNS.items():
        value = getattr(webhook, column)
        if member in SECRET_MEMBERS:
            shown[member] = MASK if value else None
        elif member == "token_url":
            shown[member] = url_redacted(value) if value else ""
        else:
            shown[member] = value
    return shown


def auth_columns(given: object, stored: Webhook | None) -> tuple[dict[str, str], list[str]]:
    """The auth columns to save for `given` (the API's object), and the problems found."""
    if not isinstance(given, Mapping):
        return {}, ['auth is an object, e.g. {"type": "bearer", "token": "…"}']
    kind = given.get("type", Webhook.AuthType.NONE)
    if kind not in Webhook.AuthType.values:
        return {}, [f"auth type is one of {', '.join(Webhook.AuthType.values)}, not {kind!r}"]
    known = {"type", *AUTH_COLUMNS}
    problems = [f"unknown auth member {key!r}" for key in given if key not in known]
    columns = {"auth_type": kind} | {column: "" for column in AUTH_COLUMNS.values()}
    members = MEMBERS_OF[Webhook.AuthType(kind)]
    for member in AUTH_COLUMNS:
        value = given.get(member)
        if value is None or value == "":
            if member in members and member not in OPTIONAL:
                problems.append(f"{kind} auth needs {member}")
            continue
        if member not in members:
            problems.append(f"{member} is not used by {kind} auth")
            continue
        if not isinstance(value, str):
            problems.append(f"{member} is text")
            continue
        problem = None
        if member in SECRET_MEMBERS and value == MASK:
            value = _stored(stored, kind, member)
            if not value:
                problem = f"{MASK} keeps the stored {member}, but there is none: send it in full"
        elif member == "token_url":
            try:
                value = url_restored(value.strip(), stored=_stored(stored, kind, member) or None)
            except MaskedUrl as exc:
                problem = f"token_url: {exc}"
            else:
                problem = http.url_problem(value)
                problem = f"token_url: {problem}" if problem else None
        problem = problem or _member_problem(member, value)
        if problem:
            problems.append(problem)
        else:
            columns[AUTH_COLUMNS[member]] = value
    return columns, problems


def _stored(stored: Webhook | None, kind: str, member: str) -> str:
    """A stored member is kept only for the type it was stored for."""
    if stored is None or stored.auth_type != kind:
        return ""
    return getattr(stored, AUTH_COLUMNS[member])


def _member_problem(member: str, value: str) -> str | None:
    if len(value) > LIMITS[member]:
        return f"{member} is at most {LIMITS[member]} characters"
    if member == "token" and not _TOKEN.fullmatch(value):
        return "a bearer token is visible ASCII without spaces"
    if not _PRINTABLE.fullmatch(value):
        return f"{member} must not contain control characters or line breaks"
    if member == "username" and ":" in value:
        return "a Basic auth username cannot contain a colon (RFC 7617)"
    return None


TLS_MEMBERS = ("ca_bundle", "client_cert", "client_key")


def tls_columns(
    given: Mapping[str, object], stored: Webhook | None
) -> tuple[dict[str, str], Errors]:
    """The TLS columns to save: members missing from `given` keep the stored value, and so
    does the mask for `client_key`. Errors are keyed by member."""
    columns: dict[str, str] = {}
    errors: Errors = {}
    for member in TLS_MEMBERS:
        current = getattr(stored, member) if stored is not None else ""
        value = given.get(member, current)
        if value is None:
            value = ""
        if not isinstance(value, str):
            errors[member] = [f"{member} is PEM text"]
            continue
        value = value.strip()
        if member == "client_key" and value == MASK:
            value = current.strip()
        elif MASK in value:
            errors[member] = [f"{member} still contains {MASK}"]
            continue
        columns[member] = value + "\n" if value else ""
    if errors:
        return columns, errors
    if columns["ca_bundle"]:
        try:
            x509.load_pem_x509_certificates(columns["ca_bundle"].encode())
            ssl.create_default_context().load_verify_locations(cadata=columns["ca_bundle"])
        except (ValueError, ssl.SSLError):
            errors["ca_bundle"] = ["ca_bundle is one or more PEM certificates (BEGIN CERTIFICATE)"]
    cert, key = columns["client_cert"], columns["client_key"]
    if bool(cert) != bool(key):
        errors["client_key" if cert else "client_cert"] = [
            "a client certificate and its private key go together: give both or neither"
        ]
    elif cert:
        errors.update(_client_problems(cert, key))
    return columns, errors


def _client_problems(cert_pem: str, key_pem: str) -> Errors:
    try:
        cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError:
        return {"client_cert": ["client_cert is a PEM certificate (BEGIN CERTIFICATE)"]}
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return {"client_key": ["client_key is an unencrypted PEM private key (BEGIN PRIVATE KEY)"]}
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return {"client_key": ["client_key is not the private key of client_cert"]}
    try:
        http.tls_context(http.Tls(client_cert=cert_pem, client_key=key_pem))
    except (ValueError, ssl.SSLError) as exc:
        return {"client_cert": [f"the certificate and key cannot be used for TLS: {exc}"]}
    return {}
