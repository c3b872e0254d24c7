"""Checking and saving a webhook definition as a whole: the API and the admin both use this.

A webhook, its conditions and its headers are validated together and written in one
transaction, so a bad condition never leaves a half-saved webhook. Every problem is reported
at once in the shape DRF uses for nested bodies: a dict keyed by field, and for the nested
lists one entry per item (`{}` for the good ones), so an editor can point at the exact row:
``{"conditions": [{}, {"value": ["…"]}], "headers": [{"name": ["…"]}]}``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from licensing.gating import enabled_webhooks_limit
from webhooks import delivery, lifecycle
from webhooks.bodies import template_problem
from webhooks.call_matching import scoped_condition
from webhooks.credentials import auth_columns, tls_columns
from webhooks.delivery import MASK, secret_problem
from webhooks.http import url_problem
from webhooks.matching import ConditionError, Rule
from webhooks.models import Condition, Header, Webhook
from webhooks.templating import SOURCE_LIMIT

MAX_CONDITIONS = 100
MAX_HEADERS = 50
MAX_HEADER_VALUE = 8192
# H-state: a limit above this is no limit a receiver needs (it is 1,000 a second).
MAX_RATE_LIMIT = 60_000
# H-state: `rate_limit_per_minute` not given: keep the stored limit (None removes it).
UNCHANGED: Any = object()
# Set by the delivery itself (or by the HTTP stack): a custom value would break the protocol.
RESERVED_HEADERS = (
    "Content-Type",
    "User-Agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Host",
    "Content-Length",
)
_RESERVED = {name.lower(): name for name in RESERVED_HEADERS}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 field-value: visible ASCII, space, tab and obs-text (bytes 0x80-0xFF as Latin-1),
# which is what http.client can encode; anything else would fail at send time, not here.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

Errors = dict[str, Any]


def name_problem(name: str) -> str | None:
    """What is wrong with a (stripped) webhook name. A name is written into log lines and
    shown in lists: a line break or another control character would forge or garble them."""
    if not name:
        return "a name is required"
    if len(name) > 100:
        return "a name is at most 100 characters"
    for ch in name:
        # Cc: C0/C1 controls (CR, LF, NEL, ESC…); Zl, Zp: the Unicode line/paragraph breaks.
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return f"a name must not contain control characters or line breaks ({ch!r})"
    return None


def enable_problem(webhook: Webhook | None) -> str | None:
    """Why `webhook` (None: a new one) may not be enabled under the license's cap on enabled
    webhooks; None when it may. The API, the admin form and the admin's Enable action all ask
    here. One that is enabled already is never refused: it is not one more."""
    if webhook is not None and webhook.enabled:
        return None
    limit = enabled_webhooks_limit()
    if limit is None:
        return None
    count = Webhook.objects.filter(enabled=True).exclude(pk=getattr(webhook, "pk", None)).count()
    if count < limit:
        return None
    return (
        f"the license allows {limit} enabled webhooks and {count} are enabled: "
        "disable one first, or save this one disabled"
    )


class WebhookInvalid(ValueError):
    """The definition cannot be saved; `errors` is a DRF-shaped dict of every problem."""

    def __init__(self, errors: Errors) -> None:
        super().__init__(str(errors))
        self.errors = errors


@dataclass(frozen=True)
class WebhookDraft:
    """A validated definition, ready to write. `None` lists mean "keep the stored ones"."""

    name: str
    url: str
    enabled: bool
    meta: dict[str, Any]
    scope: str
    rules: list[Rule] | None
    headers: list[tuple[str, str]] | None
    secret: str | None
    # H-tmpl: the request's method, body template and content type.
    method: str = Webhook.Method.POST
    body_template: str = ""
    content_type: str = "application/json"
    generated_secret: str | None = field(default=None, repr=False)
    # H-auth: column values of the auth object and the TLS settings (None: keep the stored).
    auth: dict[str, str] | None = field(default=None, repr=False)
    tls: dict[str, str] | None = field(default=None, repr=False)
    # H-state: the limit to store; None: unlimited.
    rate_limit_per_minute: int | None = None


def condition_rules(
    conditions: Sequence[Any], scope: str = Webhook.Scope.RECORD
) -> tuple[list[Rule], list[Errors]]:
    """Validate a list of `{field, operator, value}` for a webhook of `scope` (call fields
    only in call scope); the errors list has one dict per item."""
    rules: list[Rule] = []
    errors: list[Errors] = []
    for item in conditions:
        if not isinstance(item, Mapping):
            errors.append(
                {"non_field_errors": ["a condition is an object {field, operator, value}"]}
            )
            continue
        try:
            rules.append(
                scoped_condition(
                    item.get("field"), item.get("operator"), item.get("value"), scope=scope
                )
            )
            errors.append({})
        except ConditionError as exc:
            errors.append({key: [message] for key, message in exc.errors.items()})
    return rules, errors


def _stored_value(rule: Rule) -> object:
    if rule.value is None:
        return ""  # valueless operators; the column is NOT NULL
    return list(rule.value) if isinstance(rule.value, tuple) else rule.value


def header_errors(name: object, value: object) -> Errors:
    errors: Errors = {}
    if not isinstance(name, str) or not name:
        errors["name"] = ["a header name is required"]
    elif "\r" in name or "\n" in name:
        errors["name"] = ["header names must not contain CR or LF"]
    elif len(name) > 100 or not _TOKEN.fullmatch(name):
        errors["name"] = [
            "a header name is 1 to 100 letters, digits or !#$%&'*+-.^_`|~ (no spaces or colons)"
        ]
    elif name.lower() in _RESERVED:
        errors["name"] = [
            f"{_RESERVED[name.lower()]} is set by the appliance and cannot be set here"
        ]
    if value is None:
        errors["value"] = ["a header value is required"]
    elif not isinstance(value, str):
        errors["value"] = ["a header value is text"]
    elif "\r" in value or "\n" in value:
        errors["value"] = ["header values must not contain CR or LF"]
    elif len(value) > MAX_HEADER_VALUE:
        errors["value"] = [f"a header value is at most {MAX_HEADER_VALUE} characters"]
    elif not _FIELD_VALUE.fullmatch(value):
        errors["value"] = ["header values may hold visible ASCII or Latin-1 text, spaces and tabs"]
    return errors


def _headers(
    headers: Sequence[Any], stored: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[Errors]]:
    result: list[tuple[str, str]] = []
    errors: list[Errors] = []
    seen: set[str] = set()
    for item in headers:
        if not isinstance(item, Mapping):
            errors.append({"non_field_errors": ["a header is an object {name, value}"]})
            continue
        name, value = item.get("name"), item.get("value")
        if isinstance(value, str):
            value = value.strip()  # surrounding whitespace is not part of an HTTP field value
        kept = value == MASK and isinstance(name, str)
        if kept:
            # A client echoing what it read back: keep the value stored under that name.
            value = stored.get(name.lower())
        problems = header_errors(name, value)
        if kept and value is None:
            problems = {"value": [f"{MASK} keeps a stored value, but {name!r} has none"]}
        if not problems and name.lower() in seen:
            problems["name"] = [f"duplicate header {name!r} (header names ignore case)"]
        errors.append(problems)
        if not problems:
            seen.add(name.lower())
            result.append((name, value))
    return result, errors


def webhook_validate(
    *,
    webhook: Webhook | None = None,
    name: object,
    url: object,
    enabled: bool,
    meta: object,
    conditions: Sequence[Any] | None,
    headers: Sequence[Any] | None,
    secret: str | None,
    generate_secret: bool = False,
    scope: object = None,
    method: object = None,
    body_template: object = None,
    content_type: object = None,
    auth: object = None,
    tls: Mapping[str, object] | None = None,
    rate_limit_per_minute: object = UNCHANGED,
) -> WebhookDraft:
    """Check a whole definition; raise WebhookInvalid with every problem found.

    `conditions`/`headers` None keep the stored ones (a new webhook gets none). `secret` None
    keeps the stored secret, "" removes it; `generate_secret` makes a new one instead.
    A header value equal to the mask keeps the stored value of that header. `scope` None
    keeps the stored scope (a new webhook: record); so do None `method`, `body_template`
    and `content_type` (a new webhook: POST, the seed body, application/json). `auth` None
    keeps the stored auth (a new webhook: none); `tls` holds the TLS members given (a
    missing one keeps its value).
    """
    errors: Errors = {}
    name = name.strip() if isinstance(name, str) else ""
    if problem := name_problem(name):
        errors["name"] = [problem]
    elif Webhook.objects.filter(name=name).exclude(pk=getattr(webhook, "pk", None)).exists():
        errors["name"] = [f"a webhook named {name!r} exists already"]

    url = url.strip() if isinstance(url, str) else ""
    if not url:
        errors["url"] = ["a URL is required"]
    elif len(url) > 2000:
        errors["url"] = ["a URL is at most 2000 characters"]
    elif any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        errors["url"] = ["a URL must not contain spaces or control characters"]
    elif problem := url_problem(url):
        errors["url"] = [problem]

    if not isinstance(meta, dict):
        errors["meta"] = ['meta is a JSON object, e.g. {} or {"event": "missed call"}']
    elif "\\u0000" in json.dumps(meta):
        # PostgreSQL's jsonb cannot hold a NUL character: refused here, not a failed save.
        errors["meta"] = ["meta must not contain NUL characters (\\u0000)"]

    stored_scope = webhook.scope if webhook is not None else Webhook.Scope.RECORD
    if scope is None:
        scope = stored_scope
    if scope not in Webhook.Scope.values:
        errors["scope"] = [f"scope is one of {', '.join(Webhook.Scope.values)}, not {scope!r}"]
        scope = stored_scope
    rules: list[Rule] | None = None
    if conditions is None and webhook is None:
        conditions = []
    if conditions is None and webhook is not None and scope != stored_scope:
        # The stored conditions must hold in the new scope too (no call.* in record scope).
        conditions = [
            {"field": c.field, "operator": c.operator, "value": c.value}
            for c in webhook.conditions.all()
        ]
    if conditions is not None:
        if len(conditions) > MAX_CONDITIONS:
            errors["conditions"] = [f"at most {MAX_CONDITIONS} conditions"]
        else:
            rules, condition_errors = condition_rules(conditions, str(scope))
            if any(condition_errors):
                errors["conditions"] = condition_errors

    header_pairs: list[tuple[str, str]] | None = None
    if headers is None and webhook is None:
        headers = []
    if headers is not None:
        if len(headers) > MAX_HEADERS:
            errors["headers"] = [f"at most {MAX_HEADERS} headers"]
        else:
            stored = {} if webhook is None else _stored_headers(webhook)
            header_pairs, header_errors = _headers(headers, stored)
            if any(header_errors):
                errors["headers"] = header_errors

    generated = None
    if generate_secret:
        if secret:
            errors["secret"] = ["give a secret or ask for a generated one, not both"]
        generated = secret = delivery.generate_secret()
    elif secret and (problem := secret_problem(secret)):
        errors["secret"] = [problem]

    request_errors, request = _request(webhook, method, body_template, content_type)
    errors.update(request_errors)
    if "body_template" not in errors and (
        problem := template_problem(
            source=request["body_template"],
            content_type=request["content_type"],
            scope=str(scope),
            name=name,
            meta=meta,
        )
    ):
        errors["body_template"] = [problem]

    if enabled and (problem := enable_problem(webhook)):
        errors["enabled"] = [problem]

    # H-auth
    auth_values = None
    if auth is not None:
        auth_values, auth_problems = auth_columns(auth, webhook)
        if auth_problems:
            errors["auth"] = auth_problems
    auth_type = (auth_values or {}).get("auth_type") or getattr(webhook, "auth_type", "none")
    if auth_type != Webhook.AuthType.NONE and "auth" not in errors:
        names = (
            [name for name, _ in header_pairs]
            if header_pairs is not None
            else list(_stored_headers(webhook) if webhook is not None else ())
        )
        if any(name.lower() == "authorization" for name in names):
            errors["auth"] = [
                "a custom Authorization header is set too: remove it, or use auth type none"
            ]
    tls_values = None
    if tls is not None:
        tls_values, tls_errors = tls_columns(tls, webhook)
        errors.update(tls_errors)
    limit: int | None = None
    if rate_limit_per_minute is UNCHANGED:
        limit = webhook.rate_limit_per_minute if webhook is not None else None
    elif rate_limit_per_minute is not None:
        if (
            isinstance(rate_limit_per_minute, bool)
            or not isinstance(rate_limit_per_minute, int)
            or not 1 <= rate_limit_per_minute <= MAX_RATE_LIMIT
        ):
            errors["rate_limit_per_minute"] = [
                f"a whole number from 1 to {MAX_RATE_LIMIT}, or empty for no limit"
            ]
        else:
            limit = rate_limit_per_minute

    if errors:
        raise WebhookInvalid(errors)
    return WebhookDraft(
        name=name,
        url=url,
        enabled=enabled,
        meta=meta,  # type: ignore[arg-type]  # checked above
        scope=str(scope),
        rules=rules,
        headers=header_pairs,
        secret=secret,
        generated_secret=generated,
        **request,
        auth=auth_values,
        tls=tls_values,
        rate_limit_per_minute=limit,
    )


_MEDIA_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _request(
    webhook: Webhook | None, method: object, body_template: object, content_type: object
) -> tuple[Errors, dict[str, str]]:
    """H-tmpl: the method, body template and content type to save (None keeps the stored
    value), and their problems; the template itself is checked by `template_problem`."""
    errors: Errors = {}
    given = {"method": method, "body_template": body_template, "content_type": content_type}
    values: dict[str, str] = {}
    for key, value in given.items():
        default = Webhook._meta.get_field(key).default
        stored = getattr(webhook, key) if webhook is not None else default
        values[key] = stored if value is None else value
        if not isinstance(values[key], str):
            errors[key] = [f"{key} is text"]
            values[key] = stored
    if values["method"] not in Webhook.Method.values:
        errors["method"] = [f"method is one of {', '.join(Webhook.Method.values)}"]
    if len(values["body_template"]) > SOURCE_LIMIT:
        errors["body_template"] = [f"a template is at most {SOURCE_LIMIT} characters"]
    elif "\x00" in values["body_template"]:
        errors["body_template"] = ["a template must not contain NUL characters"]
    media = values["content_type"].split(";", 1)[0].strip()
    if not _MEDIA_TYPE.fullmatch(media) or not _FIELD_VALUE.fullmatch(values["content_type"]):
        errors["content_type"] = ["a media type such as application/json or text/plain"]
    elif len(values["content_type"]) > 200:
        errors["content_type"] = ["a content type is at most 200 characters"]
    return errors, values


def _stored_headers(webhook: Webhook) -> dict[str, str]:
    return {name.lower(): value for name, value in webhook.headers.values_list("name", "value")}


def webhook_save(
    *,
    webhook: Webhook | None = None,
    name: object,
    url: object,
    enabled: bool,
    meta: object,
    conditions: Sequence[Any] | None,
    headers: Sequence[Any] | None,
    secret: str | None,
    generate_secret: bool = False,
    scope: object = None,
    method: object = None,
    body_template: object = None,
    content_type: object = None,
    auth: object = None,
    tls: Mapping[str, object] | None = None,
    rate_limit_per_minute: object = UNCHANGED,
    drop_held: bool = False,
) -> tuple[Webhook, str | None]:
    """Validate and write a webhook with its conditions and headers, all or nothing.

    Returns the webhook and the generated secret (None unless one was asked for): the only
    time that secret is ever available in clear.
    """
    try:
        with transaction.atomic():
            draft = webhook_validate(
                webhook=webhook,
                name=name,
                url=url,
                enabled=enabled,
                meta=meta,
                conditions=conditions,
                headers=headers,
                secret=secret,
                generate_secret=generate_secret,
                scope=scope,
                method=method,
                body_template=body_template,
                content_type=content_type,
                auth=auth,
                tls=tls,
                rate_limit_per_minute=rate_limit_per_minute,
            )
            was_enabled = webhook.enabled if webhook is not None else None
            saved = _write(webhook, draft)
            if was_enabled is not None and was_enabled != draft.enabled:
                # Disabling holds the open deliveries; enabling sends (or drops) the held.
                lifecycle.webhook_enabled_change(
                    saved.pk, enabled=draft.enabled, drop_held=drop_held
                )
    except IntegrityError as exc:
        # Two saves racing for one name: the unique constraint decides, report it the same way.
        if Webhook.objects.filter(name=draft.name).exists():
            raise WebhookInvalid(
                {"name": [f"a webhook named {draft.name!r} exists already"]}
            ) from exc
        raise
    return saved, draft.generated_secret


DEFINITION_FIELDS = [
    "name", "url", "enabled", "meta", "scope", "secret", "updated_at",
    "method", "body_template", "content_type",  # H-tmpl
    "rate_limit_per_minute",  # H-state
    # H-auth
    "previous_secret", "previous_secret_until", "auth_type", "auth_username", "auth_password",
    "auth_token", "auth_token_url", "auth_client_id", "auth_client_secret", "auth_scope",
    "ca_bundle", "client_cert", "client_key",
]  # fmt: skip


def _rotate(webhook: Webhook, secret: str) -> None:
    """A new signing secret: the replaced one keeps signing beside it for
    WEBHOOK_SECRET_OVERLAP seconds. Removing the secret stops signing at once."""
    overlap = settings.WEBHOOK_SECRET_OVERLAP
    if webhook.secret and secret and overlap > 0:
        webhook.previous_secret = webhook.secret
        webhook.previous_secret_until = timezone.now() + timedelta(seconds=overlap)
    else:
        webhook.previous_secret, webhook.previous_secret_until = "", None
    webhook.secret = secret


def _write(webhook: Webhook | None, draft: WebhookDraft) -> Webhook:
    if webhook is None:
        webhook = Webhook()
    webhook.name = draft.name
    webhook.url = draft.url
    webhook.enabled = draft.enabled
    webhook.meta = draft.meta
    webhook.scope = draft.scope
    webhook.method = draft.method
    webhook.body_template = draft.body_template
    webhook.content_type = draft.content_type
    if draft.secret is not None and draft.secret != webhook.secret:
        _rotate(webhook, draft.secret)
    for column, value in {**(draft.auth or {}), **(draft.tls or {})}.items():
        setattr(webhook, column, value)
    webhook.rate_limit_per_minute = draft.rate_limit_per_minute  # H-state
    if webhook.pk is None:
        webhook.save()
    else:
        # Only the definition: statistics move concurrently with F() updates elsewhere.
        webhook.save(update_fields=DEFINITION_FIELDS)
    if draft.rules is not None:
        webhook.conditions.all().delete()
        Condition.objects.bulk_create(
            Condition(
                webhook=webhook,
                field=rule.field,
                operator=rule.operator,
                value=_stored_value(rule),
                order=order,
            )
            for order, rule in enumerate(draft.rules)
        )
    if draft.headers is not None:
        webhook.headers.all().delete()
        Header.objects.bulk_create(
            Header(webhook=webhook, name=name, value=value) for name, value in draft.headers
        )
    return webhook
