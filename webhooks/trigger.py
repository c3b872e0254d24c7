"""Evaluating newly stored CDRs against the enabled webhooks, inside the ingest transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
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
        compiled.append(CompiledWebhook(webhook.pk, webhook.name, match))
    return compiled


def enabled_webhooks() -> list[Webhook]:
    return list(Webhook.objects.filter(enabled=True).prefetch_related("conditions"))


_VERSION_SQL = (
    "SELECT (SELECT count(*) FROM webhooks_webhook WHERE enabled),"
    " (SELECT max(updated_at) FROM webhooks_webhook WHERE enabled),"
    " (SELECT count(*) FROM webhooks_condition), (SELECT max(id) FROM webhooks_condition)"
)
_compiled: dict[tuple[str, ...], tuple[tuple[Any, ...], list[CompiledWebhook]]] = {}


def webhooks_compiled(layout: Layout) -> list[CompiledWebhook]:
    """The enabled webhooks compiled for this layout, rebuilt only when they changed.

    Every change an operator can make (API, admin, enable/disable) saves the webhook and so
    moves its `updated_at`; adding or deleting a condition changes the condition count or
    the highest id. One small query per batch tells, instead of loading and compiling every
    webhook and condition again.
    """
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL)
        version = tuple(cursor.fetchone())
    key = tuple(layout.names)
    cached = _compiled.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    compiled = webhooks_compile(enabled_webhooks(), layout.index)
    if len(_compiled) > 16:
        _compiled.clear()
    _compiled[key] = (version, compiled)
    return compiled


def webhooks_trigger(layout: Layout, stored: list[StoredRecord]) -> None:
    """Evaluate newly stored CDRs against every enabled webhook, inside the ingest batch's
    transaction: statistics and delivery rows commit with the records or not at all.

    Per batch, whatever its size: one small query to see whether the webhooks changed,
    `match_batch`, one INSERT of every delivery (no body: it is rendered at the first send)
    and one UPDATE of the hit statistics, with the webhook rows locked in id order so that
    concurrent ingests queue behind each other instead of deadlocking.
    """
    compiled = webhooks_compiled(layout)
    if compiled:
        found = match_batch([hook.match for hook in compiled], [r.values for r in stored])
        _fire(compiled, [[stored[i].id for i in matched] for matched in found])


class WebhookTrigger:
    """`webhooks_trigger` for a file ingest, with the matching done ahead of time.

    `prepare` runs on the ingest's read-ahead thread (no database there): it matches the
    whole batch while the database is still storing the previous one. The call, in the
    batch's transaction, then keeps the matches of the records that were new. If the
    webhooks changed in between, the batch is matched again, here, against the new ones.
    """

    def __init__(self) -> None:
        self.compiled: list[CompiledWebhook] = []

    def refresh(self, layout: Layout) -> None:
        self.compiled = webhooks_compiled(layout)

    def prepare(self, layout: Layout, rows: Sequence[Any]) -> Any:
        compiled = self.compiled
        if not compiled:
            return compiled, []
        found = match_batch([hook.match for hook in compiled], [row.values for row in rows])
        return compiled, [[rows[i].line for i in matched] for matched in found]

    def __call__(self, layout: Layout, stored: list[StoredRecord], prepared: Any = None) -> None:
        self.refresh(layout)
        if prepared is None or prepared[0] is not self.compiled:
            webhooks_trigger(layout, stored)
            return
        compiled, lines = prepared
        if not compiled:
            return
        ids = {record.line: record.id for record in stored}
        _fire(compiled, [[ids[n] for n in matched if n in ids] for matched in lines])


def _fire(compiled: list[CompiledWebhook], cdr_ids_by_hook: list[list[int]]) -> None:
    """Count the hits and create the deliveries: `cdr_ids_by_hook[k]` are the records that
    `compiled[k]` matched."""
    hits = {h.id: len(ids) for h, ids in zip(compiled, cdr_ids_by_hook, strict=True) if ids}
    if not hits:
        return
    now = timezone.now()
    live = _hits_add(hits, now)
    webhook_ids: list[int] = []
    cdr_ids: list[int] = []
    for hook, ids in zip(compiled, cdr_ids_by_hook, strict=True):
        if ids and hook.id in live:
            webhook_ids.extend([hook.id] * len(ids))
            cdr_ids.extend(ids)
    if not webhook_ids:
        return
    license_problem = webhooks_license_problem()
    pending = _deliveries_insert(webhook_ids, cdr_ids, now, skipped=license_problem is not None)
    if pending:
        from webhooks.services import deliveries_enqueue

        transaction.on_commit(lambda: deliveries_enqueue(pending))


def _hits_add(hits: dict[int, int], now: Any) -> set[int]:
    """Add the hits, locking the webhooks' rows in id order until the batch commits; the ids
    of the webhooks that still exist (one deleted meanwhile gets no deliveries)."""
    ids = sorted(hits)
    if connection.vendor != "postgresql":  # SQLite: one writer at a time anyway
        return {
            webhook_id
            for webhook_id in ids
            if Webhook.objects.filter(pk=webhook_id).update(
                hit_count=F("hit_count") + hits[webhook_id], last_hit_at=now
            )
        }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM webhooks_webhook WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            [ids],
        )
        live = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "UPDATE webhooks_webhook AS w SET hit_count = w.hit_count + v.n, last_hit_at = %s "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n) WHERE w.id = v.id",
            [now, ids, [hits[i] for i in ids]],
        )
    return live


# Every column of a new event delivery but the two that vary per row and the event id.
_DELIVERY_COLUMNS = (
    "kind", "body", "status", "reason", "attempt_count", "schedule_start", "next_attempt_at",
    "claimed_until", "last_status_code", "last_error", "created_at", "finished_at",
)  # fmt: skip


def _delivery_defaults(now: Any, skipped: bool) -> dict[str, Any]:
    if skipped:
        status, reason, next_at, claimed, finished = "skipped", "license", None, None, now
    else:
        status, reason, next_at, claimed, finished = "pending", "", now, now + ENQUEUE_GRACE, None
    return {
        "kind": Delivery.Kind.EVENT,
        "body": "",
        "status": status,
        "reason": reason,
        "attempt_count": 0,
        "schedule_start": 0,
        "next_attempt_at": next_at,
        "claimed_until": claimed,
        "last_status_code": None,
        "last_error": "",
        "created_at": now,
        "finished_at": finished,
    }


# Like new_event_id's (msg_ + 32 hex digits), but time first: 12 hex digits of the
# millisecond, then 20 random ones (PostgreSQL's random(), seeded per session from the
# system's strong source: ids must be unique, not secret). Ids of one batch then land
# together at the right edge of the unique index instead of on random pages all over it.
_EVENT_ID_SQL = (
    "'msg_' || lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0')"
    " || lpad(to_hex((random() * 281474976710655)::bigint), 12, '0')"
    " || lpad(to_hex((random() * 4294967295)::bigint), 8, '0')"
)


def _deliveries_insert(
    webhook_ids: list[int], cdr_ids: list[int], now: Any, *, skipped: bool
) -> list[int]:
    """One delivery per (webhook, cdr) pair; the ids of those to send."""
    defaults = _delivery_defaults(now, skipped)
    if connection.vendor != "postgresql":
        rows = [
            Delivery(webhook_id=w, cdr_id=c, event_id=new_event_id(), **defaults)
            for w, c in zip(webhook_ids, cdr_ids, strict=True)
        ]
        Delivery.objects.bulk_create(rows, batch_size=500)
        return [] if skipped else [row.pk for row in rows]
    # PostgreSQL: the pairs travel as two arrays and the event ids are made by the server.
    columns = ", ".join(_DELIVERY_COLUMNS)
    values = ", ".join(["%s"] * len(_DELIVERY_COLUMNS))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO webhooks_delivery (webhook_id, cdr_id, event_id, {columns}) "
            f"SELECT w, c, {_EVENT_ID_SQL}, {values} "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS p(w, c)"
            + ("" if skipped else " RETURNING id"),
            [*(defaults[c] for c in _DELIVERY_COLUMNS), webhook_ids, cdr_ids],
        )
        return [] if skipped else [row[0] for row in cursor.fetchall()]
