"""Evaluating newly stored CDRs against the enabled webhooks, inside the ingest transaction."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from cdr.parsing import Layout
from cdr.services import StoredRecord
from licensing.gating import webhooks_license_problem
from webhooks.delivery import new_event_id
from webhooks.matching import Rule, compile_rules, match_batch, rules_from
from webhooks.models import Delivery, Webhook

log = logging.getLogger(__name__)

# A pending delivery handed to the broker is not handed again before this, unless it ran.
ENQUEUE_GRACE = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class CompiledWebhook:
    id: int
    name: str
    meta: dict[str, Any]
    match: Callable[[Sequence[str]], bool]


def webhook_rules(webhook: Webhook) -> list[Rule]:
    return rules_from((c.field, c.operator, c.value) for c in webhook.conditions.all())


def webhooks_compile(webhooks: Iterable[Webhook], index: dict[str, int]) -> list[CompiledWebhook]:
    compiled = []
    for webhook in webhooks:
        try:
            rules = webhook_rules(webhook)
        except ValueError as exc:  # saved before a validation rule existed: skip, loudly
            log.error("webhook %s has an invalid condition and is skipped: %s", webhook.name, exc)
            continue
        match = compile_rules(rules, index)
        compiled.append(CompiledWebhook(webhook.pk, webhook.name, webhook.meta, match))
    return compiled


def enabled_webhooks() -> list[Webhook]:
    return list(Webhook.objects.filter(enabled=True).prefetch_related("conditions"))


def webhooks_trigger(layout: Layout, stored: list[StoredRecord]) -> None:
    """Evaluate newly stored CDRs against every enabled webhook, inside the ingest batch's
    transaction: statistics and delivery rows commit with the records or not at all."""
    compiled = webhooks_compile(enabled_webhooks(), layout.index)
    if not compiled:
        return
    found = match_batch([hook.match for hook in compiled], [record.values for record in stored])
    hooks_by_record: defaultdict[int, list[CompiledWebhook]] = defaultdict(list)
    for hook, matched in zip(compiled, found, strict=True):
        for i in matched:
            hooks_by_record[i].append(hook)
    if not hooks_by_record:
        return
    license_problem = webhooks_license_problem()
    now = timezone.now()
    deliveries: list[Delivery] = []
    for i in sorted(hooks_by_record):
        record_id = stored[i].id
        deliveries.extend(
            _new_delivery(hook, record_id, now, license_problem) for hook in hooks_by_record[i]
        )
    Delivery.objects.bulk_create(deliveries, batch_size=500)
    for hook, matched in zip(compiled, found, strict=True):
        if matched:
            Webhook.objects.filter(pk=hook.id).update(
                hit_count=F("hit_count") + len(matched), last_hit_at=now
            )
    pending = [d.pk for d in deliveries if d.status == Delivery.Status.PENDING]
    if pending:
        from webhooks.services import deliveries_enqueue

        transaction.on_commit(lambda: deliveries_enqueue(pending))


def _new_delivery(
    hook: CompiledWebhook, cdr_id: int, now: Any, license_problem: str | None
) -> Delivery:
    delivery = Delivery(
        webhook_id=hook.id,
        cdr_id=cdr_id,
        kind=Delivery.Kind.EVENT,
        event_id=new_event_id(),
        next_attempt_at=now,
        claimed_until=now + ENQUEUE_GRACE,
    )
    if license_problem is not None:
        delivery.status = Delivery.Status.SKIPPED
        delivery.reason = "license"
        delivery.finished_at = now
        delivery.next_attempt_at = None
        delivery.claimed_until = None
    return delivery
