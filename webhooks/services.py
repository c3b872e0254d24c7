"""Webhook operations: trigger on new records, test sends, redelivery, the sweeper."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from cdr.models import Cdr
from webhooks.delivery import (
    BATCH_MAX,
    delivery_claim,
    delivery_send,
    held_webhooks,
    new_event_id,
)
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import cdr_renderer, payload_body
from webhooks.sample import SAMPLE_CDR
from webhooks.trigger import ENQUEUE_GRACE

log = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


def deliveries_enqueue(ids: Iterable[int]) -> None:
    """Hand deliveries to the workers, one task per batch of at most BATCH_MAX ids."""
    from webhooks.tasks import deliver_many

    ids = list(ids)
    try:
        for start in range(0, len(ids), BATCH_MAX):
            deliver_many.delay(ids[start : start + BATCH_MAX])
    except Exception as exc:  # broker down: the rows are safe, the sweeper sends them later
        log.warning("could not enqueue deliveries (%s); the sweeper will retry", exc)


def deliveries_sweep() -> int:
    """Hand due deliveries to the workers and reclaim those whose worker died mid-send."""
    now = timezone.now()
    Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_until__lt=now).update(
        status=Delivery.Status.PENDING, claimed_until=None, next_attempt_at=now
    )
    due = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        # A slow receiver's backlog waits here, not in the queue ahead of everyone else's.
        .exclude(webhook_id__in=held_webhooks(now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    if due:
        Delivery.objects.filter(pk__in=due, status=Delivery.Status.PENDING).update(
            claimed_until=now + ENQUEUE_GRACE
        )
        deliveries_enqueue(due)
    return len(due)


def webhook_test_send(*, webhook: Webhook, cdr: Cdr | None = None) -> DeliveryAttempt | None:
    """Send one test event now: a stored CDR, or the synthetic one. One attempt, no retry."""
    if cdr is not None:
        names, values = cdr.layout.fields, list(cdr.fields.values())
    else:
        names, values = list(SAMPLE_CDR), list(SAMPLE_CDR.values())
    body = payload_body(name=webhook.name, meta=webhook.meta, cdr=cdr_renderer(names)(values))
    now = timezone.now()
    delivery = Delivery.objects.create(
        webhook=webhook,
        cdr=cdr,
        kind=Delivery.Kind.TEST,
        event_id=new_event_id(),
        body=body,
        next_attempt_at=now,
    )
    claimed = delivery_claim(delivery_id=delivery.pk, now=now)
    assert claimed is not None  # just created, nobody else knows it
    return delivery_send(delivery=claimed, trigger="test", retry=False)


# Deliveries requeued per statement: SQLite caps the number of parameters in one.
REQUEUE_CHUNK = 500


def deliveries_requeue(*, ids: Sequence[int], statuses: Sequence[str]) -> int:
    """Send again those of `ids` whose status is in `statuses` (never one being sent): each
    keeps its webhook-id and gets a fresh retry schedule. Returns how many were requeued.

    A webhook's delivered and failed counters describe its deliveries' final states, so a
    requeued delivery stops counting as succeeded or failed: its next outcome counts it.
    """
    statuses = [s for s in statuses if s != Delivery.Status.SENDING]
    now = timezone.now()
    requeued: list[int] = []
    finished: Counter[tuple[int, str]] = Counter()
    with transaction.atomic():
        for start in range(0, len(ids), REQUEUE_CHUNK):
            # Locked, so that no worker records an outcome between the count and the update.
            rows = list(
                Delivery.objects.select_for_update()
                .filter(pk__in=ids[start : start + REQUEUE_CHUNK], status__in=statuses)
                .order_by("pk")
                .values_list("pk", "webhook_id", "status")
            )
            if not rows:
                continue
            Delivery.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
                status=Delivery.Status.PENDING,
                schedule_start=F("attempt_count"),
                next_attempt_at=now,
                claimed_until=now + ENQUEUE_GRACE,
                finished_at=None,
                reason="",
            )
            requeued += [pk for pk, _, _ in rows]
            finished.update((webhook_id, status) for _, webhook_id, status in rows)
        for webhook_id in sorted({webhook_id for webhook_id, _ in finished}):
            delivered = finished[(webhook_id, Delivery.Status.SUCCEEDED)]
            failed = finished[(webhook_id, Delivery.Status.FAILED)]
            if delivered or failed:
                # Never below 0: counts kept before they described final states may be short.
                Webhook.objects.filter(pk=webhook_id).update(
                    delivered_count=Greatest(F("delivered_count") - delivered, 0),
                    failed_count=Greatest(F("failed_count") - failed, 0),
                )
        if requeued:
            transaction.on_commit(lambda: deliveries_enqueue(requeued))
    return len(requeued)


def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again (same webhook-id), with a fresh retry schedule; one being sent
    right now is left alone."""
    deliveries_requeue(ids=[delivery.pk], statuses=Delivery.Status.values)
    delivery.refresh_from_db()
    return delivery


def webhook_set_enabled(*, webhook: Webhook, enabled: bool) -> Webhook:
    Webhook.objects.filter(pk=webhook.pk).update(enabled=enabled, updated_at=timezone.now())
    webhook.refresh_from_db()
    return webhook
