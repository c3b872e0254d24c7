"""Webhook operations: test sends, previews, redelivery of one delivery, enabling a webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from cdr.models import Cdr
from webhooks import lifecycle
from webhooks.bodies import CallObjects, call_body, record_body, sample_call, sample_cdr
from webhooks.delivery import delivery_send, new_event_id, request_headers
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.operations import calls_dry_run, cdrs_dry_run
from webhooks.payload import stored_calls, stored_cdrs
from webhooks.trigger import webhook_rules

# How many of the newest stored records (settled calls) a test event or a preview searches
# for one that matches the webhook's conditions before it falls back to the sample.
LATEST_SEARCHED = 1000


@dataclass(frozen=True, slots=True)
class EventSource:
    """What a test event or a preview renders: a stored record, a stored call, or the
    sample (`kind` "cdr", "call" or "sample"), with the payload objects of it."""

    kind: str
    cdr_id: int | None = None
    call_id: int | None = None
    cdr: dict[str, Any] | None = None  # record scope
    call: CallObjects | None = None  # call scope

    def body(self, *, webhook: Webhook, event_id: str) -> str:
        """Raises TemplateFailed when the webhook's template does."""
        if self.call is not None:
            return call_body(webhook=webhook, objects=self.call, event_id=event_id)
        assert self.cdr is not None
        return record_body(webhook=webhook, cdr=self.cdr, event_id=event_id)


def _latest_match(webhook: Webhook) -> int | None:
    """The newest stored record (settled call, in call scope) the conditions match."""
    try:
        rules = webhook_rules(webhook)
    except ValueError:  # conditions saved before a rule existed: no match to look for
        return None
    run = calls_dry_run if webhook.scope == Webhook.Scope.CALL else cdrs_dry_run
    sample = run(rules=rules, limit=LATEST_SEARCHED).sample
    return int(sample[0]["id"]) if sample else None  # type: ignore[call-overload]


def event_source(
    *, webhook: Webhook, cdr: Cdr | None = None, call_id: int | None = None
) -> EventSource:
    """The record or call a test event or a preview shows: the one given; else the newest
    stored one that matches the webhook's conditions; else the sample. A call-scope
    webhook given a CDR takes its call (the sample call while the CDR is in none)."""
    if webhook.scope == Webhook.Scope.CALL:
        if call_id is None and cdr is not None:
            call_id = cdr.call_ref_id
            if call_id is None:
                return EventSource(kind="sample", call=sample_call())
        if call_id is None and cdr is None:
            call_id = _latest_match(webhook)
        stored = stored_calls([call_id]).get(call_id) if call_id is not None else None
        if stored is None:
            return EventSource(kind="sample", call=sample_call())
        return EventSource(kind="call", call_id=stored.id, call=stored.objects())
    cdr_id = cdr.pk if cdr is not None else _latest_match(webhook)
    record = stored_cdrs([cdr_id]).get(cdr_id) if cdr_id is not None else None
    if record is None:
        return EventSource(kind="sample", cdr=sample_cdr())
    return EventSource(kind="cdr", cdr_id=record.id, cdr=record.cdr())


def webhook_test_send(*, webhook: Webhook, cdr: Cdr | None = None) -> DeliveryAttempt | None:
    """Send one test event now (header `webhook-test: true`): a stored CDR, else the newest
    stored one the conditions match, else the synthetic one. One attempt, no retry.

    A call-scope webhook sends a call payload: the CDR's call (once it belongs to one), else
    the newest matching settled call, else the synthetic record's call. Raises
    TemplateFailed (nothing sent) when the webhook's body template fails."""
    event_id = new_event_id()
    source = event_source(webhook=webhook, cdr=cdr)
    delivery = Delivery(
        webhook=webhook,
        cdr_id=source.cdr_id if source.kind == "cdr" else getattr(cdr, "pk", None),
        call_id=source.call_id,
        kind=Delivery.Kind.TEST,
        event_id=event_id,
        body=source.body(webhook=webhook, event_id=event_id),
    )
    claimed = lifecycle.operator_delivery_claimed(delivery=delivery, now=timezone.now())
    return delivery_send(delivery=claimed, trigger="test", retry=False)


@dataclass(frozen=True, slots=True)
class Preview:
    source: EventSource
    method: str
    url: str
    body: str
    headers: dict[str, str]  # as they would be sent, secrets masked


def webhook_preview(
    *, webhook: Webhook, cdr: Cdr | None = None, call_id: int | None = None
) -> Preview:
    """The request a webhook would send for a record or call (see `event_source`), without
    sending anything or storing a delivery. Raises TemplateFailed."""
    source = event_source(webhook=webhook, cdr=cdr, call_id=call_id)
    event_id = new_event_id()
    body = source.body(webhook=webhook, event_id=event_id)
    custom = list(webhook.headers.values_list("name", "value"))
    _, redacted = request_headers(webhook, custom, event_id, body.encode())
    return Preview(
        source=source, method=webhook.method, url=webhook.url, body=body, headers=redacted
    )


def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again (same webhook-id), with a fresh retry schedule; one being sent
    right now is left alone."""
    lifecycle.deliveries_requeue(ids=[delivery.pk], statuses=Delivery.Status.values)
    delivery.refresh_from_db()
    return delivery


def webhook_set_enabled(*, webhook: Webhook, enabled: bool, drop_held: bool = False) -> Webhook:
    """Enable or disable a webhook: disabling holds its open deliveries; enabling sends the
    held ones, or with `drop_held` skips them."""
    with transaction.atomic():
        changed = Webhook.objects.filter(pk=webhook.pk).exclude(enabled=enabled)
        if changed.update(enabled=enabled, updated_at=timezone.now()):
            lifecycle.webhook_enabled_change(webhook.pk, enabled=enabled, drop_held=drop_held)
    webhook.refresh_from_db()
    return webhook


def webhook_resume(*, webhook: Webhook) -> int:
    """Resume a paused webhook; how many held deliveries are sent again (in order)."""
    released = lifecycle.webhook_resume(webhook.pk)
    webhook.refresh_from_db()
    return released
