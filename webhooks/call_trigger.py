"""Firing call-scope webhooks when calls settle, inside the settle sweep's transaction.

`cdr.calls` settles calls and tells the registered `cdr.contracts.CallListener` which ones;
`WebhooksConfig.ready` registers `CALL_TRIGGER`. For a batch of settled calls: one query for
the enabled call-scope webhooks and their conditions, one for the calls' facts, one for the
legs' raw lines (only when a webhook has a plain CDR condition), then one INSERT of the
deliveries and one UPDATE of the hit statistics per webhook that matched.

A call fires a webhook at most once, ever: the deliveries are inserted with ON CONFLICT DO
NOTHING against the (webhook, call) unique index, so a call settled again (a late leg opened
it) or settled by two racing sweeps finds its delivery there, and only the rows actually
inserted count as hits and are sent. Everything else — the initial state, licence gating
(skipped deliveries), the enqueue after commit — is the record trigger's, from
`webhooks.lifecycle`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from licensing.gating import webhooks_license_problem
from webhooks import sql
from webhooks.call_matching import FACT_COLUMNS, CallRules, Leg, LegRules
from webhooks.delivery import new_event_id
from webhooks.lifecycle import deliveries_enqueue, initial_state
from webhooks.models import Webhook
from webhooks.trigger import enabled_webhooks, webhook_rules

log = logging.getLogger(__name__)

# Calls evaluated per round of queries: bounds the IN lists (SQLite's parameter limit) and
# the legs held in memory at once.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class CallWebhook:
    id: int
    name: str
    rules: CallRules


def call_webhooks() -> list[CallWebhook]:
    """The enabled call-scope webhooks, compiled; one with a condition that no longer
    validates is skipped, loudly, as in record scope."""
    compiled = []
    for webhook in enabled_webhooks(Webhook.Scope.CALL):
        try:
            rules = webhook_rules(webhook)
        except ValueError as exc:
            log.error("webhook %s has an invalid condition and is skipped: %s", webhook.name, exc)
            continue
        compiled.append(CallWebhook(webhook.pk, webhook.name, CallRules(rules)))
    return compiled


@dataclass(slots=True)
class CallBatch:
    """Settled calls loaded for evaluation: their facts and, when asked, their legs."""

    facts: dict[int, dict[str, Any]]
    legs: dict[int, list[Leg]]
    leg_rules: LegRules


def calls_load(call_ids: Sequence[int], *, with_legs: bool) -> CallBatch:
    """Facts of the settled, unmerged calls among `call_ids` (one query) and, `with_legs`,
    the raw lines of their legs (one more, plus one for their header layouts)."""
    from cdr.models import Call, Cdr, RecordLayout

    rows = Call.objects.filter(
        pk__in=call_ids, settled_at__isnull=False, merged_into__isnull=True
    ).values("id", *FACT_COLUMNS)
    facts = {row["id"]: row for row in rows}
    legs: dict[int, list[Leg]] = {call_id: [] for call_id in facts}
    layouts: dict[int, list[str]] = {}
    if with_legs and facts:
        found = Cdr.objects.filter(call_ref_id__in=list(facts)).order_by("origination_at", "id")
        for call_id, layout_id, raw in found.values_list("call_ref_id", "layout_id", "raw"):
            legs[call_id].append(Leg(layout_id, raw))
        wanted = {leg.layout_id for held in legs.values() for leg in held}
        layouts = dict(RecordLayout.objects.filter(pk__in=wanted).values_list("pk", "fields"))
    return CallBatch(facts, legs, LegRules(layouts))


def calls_match(hooks: Sequence[CallWebhook], batch: CallBatch) -> list[tuple[int, int]]:
    """(webhook id, call id) of every match, each call evaluated once per webhook."""
    return [
        (hook.id, call_id)
        for call_id, facts in batch.facts.items()
        for hook in hooks
        if hook.rules.matches(facts, batch.legs[call_id], batch.leg_rules)
    ]


def calls_fire(call_ids: Sequence[int]) -> None:
    """Evaluate settled calls against the enabled call-scope webhooks and create the
    deliveries of the matches not fired before; in the caller's transaction."""
    hooks = call_webhooks()
    if not hooks or not call_ids:
        return
    with_legs = any(hook.rules.plain for hook in hooks)
    ids = sorted(set(call_ids))
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(ids), CHUNK):
        pairs += calls_match(hooks, calls_load(ids[start : start + CHUNK], with_legs=with_legs))
    if pairs:
        _fire(pairs)


def _fire(pairs: list[tuple[int, int]]) -> None:
    now = timezone.now()
    matched = sorted({webhook_id for webhook_id, _ in pairs})
    if connection.vendor == "postgresql":
        # As the record trigger: the webhooks' rows locked in id order until commit, so a
        # delete waits for these deliveries and racing sweeps queue instead of deadlocking.
        live = sql.webhooks_lock(matched)
    else:  # SQLite runs one writer at a time
        live = set(Webhook.objects.filter(pk__in=matched).values_list("pk", flat=True))
    pairs = [(webhook_id, call_id) for webhook_id, call_id in pairs if webhook_id in live]
    if not pairs:
        return
    skipped = webhooks_license_problem() is not None
    defaults = {
        column: connection.ops.adapt_datetimefield_value(value)
        if isinstance(value, datetime)
        else value
        for column, value in initial_state(now, skipped=skipped).items()
    }
    rows = [(webhook_id, call_id, new_event_id()) for webhook_id, call_id in pairs]
    created = sql.call_deliveries_insert(rows, defaults)
    hits = Counter(webhook_id for _, webhook_id in created)
    for webhook_id in sorted(hits):  # one order everywhere: no deadlock between sweeps
        Webhook.objects.filter(pk=webhook_id).update(
            hit_count=F("hit_count") + hits[webhook_id], last_hit_at=now
        )
    pending = sorted(delivery_id for delivery_id, _ in created)
    if pending and not skipped:
        transaction.on_commit(lambda: deliveries_enqueue(pending))


class CallTrigger:
    """The `cdr.contracts.CallListener` of call-scope webhooks."""

    def settled(self, call_ids: Sequence[int]) -> None:
        calls_fire(call_ids)


CALL_TRIGGER = CallTrigger()
