"""Webhook operations: test sends, redelivery of one delivery, enabling a webhook."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from cdr.models import Cdr
from webhooks import lifecycle
from webhooks.delivery import delivery_send, new_event_id
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import (
    call_object,
    call_payload_body,
    cdr_renderer,
    payload_body,
    stored_calls,
)
from webhooks.sample import SAMPLE_CALL, SAMPLE_CDR


def webhook_test_send(*, webhook: Webhook, cdr: Cdr | None = None) -> DeliveryAttempt | None:
    """Send one test event now: a stored CDR, or the synthetic one. One attempt, no retry.

    A call-scope webhook sends a call payload: the CDR's call (once it belongs to one),
    else the synthetic record's call."""
    call = None
    if webhook.scope == Webhook.Scope.CALL:
        if cdr is not None and cdr.call_ref_id is not None:
            call = stored_calls([cdr.call_ref_id]).get(cdr.call_ref_id)
        if call is not None:
            body = call.body(name=webhook.name, meta=webhook.meta)
        else:
            body = call_payload_body(
                name=webhook.name,
                meta=webhook.meta,
                call=call_object(SAMPLE_CALL),
                # The synthetic call's own leg, even for a stored CDR that is in no call yet.
                cdrs=[cdr_renderer(list(SAMPLE_CDR))(list(SAMPLE_CDR.values()))],
                cmrs=[],
            )
    else:
        if cdr is not None:
            names, values = cdr.layout.fields, list(cdr.fields.values())
        else:
            names, values = list(SAMPLE_CDR), list(SAMPLE_CDR.values())
        body = payload_body(name=webhook.name, meta=webhook.meta, cdr=cdr_renderer(names)(values))
    delivery = Delivery(
        webhook=webhook,
        cdr=cdr,
        call_id=call.id if call is not None else None,
        kind=Delivery.Kind.TEST,
        event_id=new_event_id(),
        body=body,
    )
    claimed = lifecycle.operator_delivery_claimed(delivery=delivery, now=timezone.now())
    return delivery_send(delivery=claimed, trigger="test", retry=False)


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
