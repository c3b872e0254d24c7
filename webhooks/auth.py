"""How a delivery proves who sends it: the `Authorization` header of a webhook's `auth`.

Basic and Bearer are fixed values. OAuth2 client credentials (RFC 6749 §4.4) fetches an
access token from the webhook's `token_url` through `webhooks.http` — the same destination
policy, timeout and TLS settings as the delivery itself — and keeps it per webhook in this
process until shortly before it expires. A receiver that answers 401 makes the delivery ask
for a new token once and send again (`webhooks.delivery`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from urllib.parse import urlencode

from calltelemetry.caching import BoundedCache
from webhooks import http
from webhooks.models import Webhook
from webhooks.redaction import MASK, text_redacted, url_redacted

# A token is used until this long before its expiry: a request signed with it must still
# reach the receiver, and clocks differ.
EXPIRY_MARGIN = 30.0
# A token endpoint that gives no `expires_in`: ask again after this long (or on a 401).
DEFAULT_LIFETIME = 3600.0
TOKEN_RESPONSE_LIMIT = 65536

SCHEMES = {Webhook.AuthType.BASIC: "Basic", Webhook.AuthType.BEARER: "Bearer"}


class AuthFailed(Exception):
    """No credentials to send: the token endpoint failed. The message is safe to show."""


def _client(webhook: Webhook) -> tuple[object, ...]:
    """What a cached token belongs to: an edit of the credentials asks for a new one."""
    material = "\0".join(
        (webhook.auth_token_url, webhook.auth_client_id, webhook.auth_client_secret)
    )
    return (webhook.pk, hashlib.sha256(material.encode()).hexdigest(), webhook.auth_scope)


_tokens: BoundedCache[tuple[object, ...], str] = BoundedCache(max_entries=1000, clear_in_child=True)
_fetching: BoundedCache[tuple[object, ...], threading.Lock] = BoundedCache(
    max_entries=1000, clear_in_child=True
)


def authorization(webhook: Webhook, tls: http.Tls | None, *, renew: bool = False) -> str | None:
    """The Authorization header value for `webhook`, None without auth. `renew` drops a
    cached OAuth2 token first (the receiver refused it)."""
    kind = webhook.auth_type
    if kind == Webhook.AuthType.BASIC:
        pair = f"{webhook.auth_username}:{webhook.auth_password}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    if kind == Webhook.AuthType.BEARER:
        return f"Bearer {webhook.auth_token}"
    if kind == Webhook.AuthType.OAUTH2:
        return f"Bearer {_oauth2_token(webhook, tls, renew=renew)}"
    return None


def authorization_masked(webhook: Webhook) -> str | None:
    """The same header as the attempt log shows it: the scheme, never the credentials."""
    if webhook.auth_type == Webhook.AuthType.BASIC:
        return f"Basic {MASK}"
    if webhook.auth_type in (Webhook.AuthType.BEARER, Webhook.AuthType.OAUTH2):
        return f"Bearer {MASK}"
    return None


def _oauth2_token(webhook: Webhook, tls: http.Tls | None, *, renew: bool) -> str:
    key = _client(webhook)
    if renew:
        _tokens.discard(key)
    token = _tokens.get(key)
    if token is not None:
        return token
    lock = _fetching.setdefault(key, threading.Lock())
    with lock:  # the sends of one batch share one fetch
        token = _tokens.get(key)
        if token is None:
            token, lifetime = _fetch(webhook, tls)
            _tokens.set(key, token, max_age=max(1.0, lifetime - EXPIRY_MARGIN))
    return token


def _fetch(webhook: Webhook, tls: http.Tls | None) -> tuple[str, float]:
    where = f"OAuth2 token endpoint {url_redacted(webhook.auth_token_url)}"
    form = {
        "grant_type": "client_credentials",
        "client_id": webhook.auth_client_id,
        "client_secret": webhook.auth_client_secret,
    }
    if webhook.auth_scope:
        form["scope"] = webhook.auth_scope
    started = time.monotonic()
    response = http.post(
        webhook.auth_token_url,
        body=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
        tls=tls,
        excerpt_limit=TOKEN_RESPONSE_LIMIT,
    )
    if response.status_code is None:
        raise AuthFailed(f"{where}: {text_redacted(response.error)}")
    if not response.ok:
        raise AuthFailed(f"{where} answered HTTP {response.status_code}{_oauth_error(response)}")
    try:
        answer = json.loads(response.body)
        token = answer["access_token"]
        if not isinstance(token, str) or not token:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise AuthFailed(f"{where} answered without an access_token") from None
    expires_in = answer.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else DEFAULT_LIFETIME
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    # The lifetime counts from when the endpoint answered, not from when we asked.
    return token, lifetime - (time.monotonic() - started)


def _oauth_error(response: http.Response) -> str:
    """RFC 6749 §5.2's error code (`invalid_client`…), which names the problem; never the
    description, which could echo what was sent."""
    try:
        error = json.loads(response.body).get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, str) and error.isascii() and error.replace("_", "").isalnum():
        return f" ({error[:64]})"
    return ""
