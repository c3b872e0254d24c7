"""What a webhook sends: the seed body (`webhooks.payload`), or its body template rendered
with the same objects (`webhooks.templating`). Every body — first send, test event, preview,
the delivery log's preview, the check on save — is made here, so all of them agree."""

from __future__ import annotations

import json
from typing import Any

from webhooks.models import Delivery, Webhook
from webhooks.payload import (
    call_object,
    call_payload_body,
    cdr_renderer,
    payload_body,
    stored_calls,
    stored_cdrs,
)
from webhooks.sample import SAMPLE_CALL, SAMPLE_CDR
from webhooks.templating import (
    TemplateFailed,
    call_variables,
    is_json,
    record_variables,
    template_compile,
    template_render,
)

CallObjects = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]


def record_body(*, webhook: Webhook, cdr: dict[str, Any], event_id: str) -> str:
    """A record-scope body; raises TemplateFailed when the webhook's template does."""
    if not webhook.body_template:
        return payload_body(name=webhook.name, meta=webhook.meta, cdr=cdr)
    variables = record_variables(cdr=cdr, name=webhook.name, meta=webhook.meta, event_id=event_id)
    return template_render(webhook.body_template, variables)


def call_body(*, webhook: Webhook, objects: CallObjects, event_id: str) -> str:
    """A call-scope body from the call's `call`, `cdrs` and `cmrs`; raises TemplateFailed."""
    call, cdrs, cmrs = objects
    if not webhook.body_template:
        return call_payload_body(
            name=webhook.name, meta=webhook.meta, call=call, cdrs=cdrs, cmrs=cmrs
        )
    variables = call_variables(
        call=call, cdrs=cdrs, cmrs=cmrs, name=webhook.name, meta=webhook.meta, event_id=event_id
    )
    return template_render(webhook.body_template, variables)


def sample_cdr() -> dict[str, Any]:
    """The synthetic record (a missed call from 1000 to 1000) as the payload's `cdr`."""
    return cdr_renderer(list(SAMPLE_CDR))(list(SAMPLE_CDR.values()))


def sample_call() -> CallObjects:
    """The synthetic record's call: one leg, no CMR."""
    return call_object(SAMPLE_CALL), [sample_cdr()], []


def event_body(
    *, webhook: Webhook, cdr_id: int | None, call_id: int | None, event_id: str
) -> str | None:
    """The body of a stored record's (or call's) event, rendered now; None when the record
    or call no longer exists. Raises TemplateFailed."""
    if call_id is not None:
        call = stored_calls([call_id]).get(call_id)
        if call is None:
            return None
        return call_body(webhook=webhook, objects=call.objects(), event_id=event_id)
    record = stored_cdrs([cdr_id]).get(cdr_id) if cdr_id is not None else None
    if record is None:
        return None
    return record_body(webhook=webhook, cdr=record.cdr(), event_id=event_id)


def delivery_body_preview(delivery: Delivery) -> str | None:
    """For a delivery not sent yet (its body is empty until the first send): the body it
    would carry, rendered now from its record and its webhook's current definition, for
    the delivery log. None when it has a body, or its record is gone or cannot be rendered
    (the delivery then failed, and its reason says why: the log page must still show)."""
    if delivery.body or (delivery.cdr_id is None and delivery.call_id is None):
        return None
    try:
        return event_body(
            webhook=delivery.webhook,
            cdr_id=delivery.cdr_id,
            call_id=delivery.call_id,
            event_id=delivery.event_id,
        )
    except Exception:
        return None


SAMPLE_EVENT_ID = "msg_" + "0" * 32


def template_problem(
    *, source: str, content_type: str, scope: str, name: object, meta: object
) -> str | None:
    """Why a body template cannot be saved: it does not compile, or it fails on the sample
    record (the sample call in call scope), or, with a JSON content type, what it renders
    there is not JSON. None when it is fine (an empty template always is)."""
    if not source:
        return None
    draft = Webhook(
        name=name if isinstance(name, str) else "",
        meta=meta if isinstance(meta, dict) else {},
        body_template=source,
        scope=scope,
    )
    try:
        template_compile(source)
        if scope == Webhook.Scope.CALL:
            body = call_body(webhook=draft, objects=sample_call(), event_id=SAMPLE_EVENT_ID)
            what = "the sample call"
        else:
            body = record_body(webhook=draft, cdr=sample_cdr(), event_id=SAMPLE_EVENT_ID)
            what = "the sample record"
    except TemplateFailed as exc:
        return str(exc)
    if is_json(content_type):
        try:
            json.loads(body)
        except ValueError as exc:
            return (
                f"with content type {content_type} the body must be JSON; for {what} it is "
                f"not ({exc})"
            )
    return None
