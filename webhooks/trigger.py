"""Evaluating newly stored CDRs against the enabled webhooks, inside the ingest transaction."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from cdr.contracts import StatementTail, StoredRecord
from cdr.parsing import Layout, Row
from licensing.gating import webhooks_license_problem
from webhooks import sql
from webhooks.call_matching import scoped_condition
from webhooks.delivery import new_event_id
from webhooks.lifecycle import deliveries_enqueue, initial_state
from webhooks.matching import Rule, compile_rules, match_batch
from webhooks.models import Delivery, Webhook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompiledWebhook:
    id: int
    name: str
    match: Callable[[Sequence[str]], bool]


def webhook_rules(webhook: Webhook) -> list[Rule]:
    return [
        scoped_condition(c.field, c.operator, c.value, scope=webhook.scope)
        for c in webhook.conditions.all()
    ]


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


def enabled_webhooks(scope: str = Webhook.Scope.RECORD) -> list[Webhook]:
    """The enabled webhooks of `scope` (records fire record-scope ones only; call-scope
    ones fire when a call settles, `webhooks.call_trigger`)."""
    return list(Webhook.objects.filter(enabled=True, scope=scope).prefetch_related("conditions"))


_compiled: BoundedCache[tuple[str, ...], tuple[tuple[Any, ...], list[CompiledWebhook]]] = (
    BoundedCache(max_entries=16)
)


def webhooks_compiled(layout: Layout) -> list[CompiledWebhook]:
    """The enabled webhooks compiled for this layout, rebuilt only when they changed.

    Every change an operator can make (API, admin, enable/disable) saves the webhook and so
    moves its `updated_at`; adding or deleting a condition changes the condition count or
    the highest id. One small query per batch tells, instead of loading and compiling every
    webhook and condition again.
    """
    version = sql.webhooks_version()
    key = tuple(layout.names)
    cached = _compiled.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    compiled = webhooks_compile(enabled_webhooks(), layout.index)
    _compiled.set(key, (version, compiled))
    return compiled


def webhooks_trigger(layout: Layout, stored: list[StoredRecord]) -> None:
    """Evaluate newly stored CDRs against every enabled webhook, inside the ingest batch's
    transaction: statistics and delivery rows commit with the records or not at all.

    SQLite's firing path (PostgreSQL fires inside the statement that stores the batch,
    `WebhookTrigger.statement`): one small query to see whether the webhooks changed,
    `match_batch`, one UPDATE of the hit statistics per matched webhook and one bulk INSERT
    of the deliveries (no body: it is rendered at the first send). SQLite runs one writer
    at a time, so concurrent ingests cannot interleave here.
    """
    compiled = webhooks_compiled(layout)
    if compiled:
        found = match_batch([hook.match for hook in compiled], [r.values for r in stored])
        _fire(compiled, [[stored[i].id for i in matched] for matched in found])


@dataclass(frozen=True, slots=True)
class BatchMatches:
    """What one batch matched, against the webhooks `compiled` at the time.

    `lines[k]` are the file lines that `compiled[k]` matched; `pairs`, when asked for, the
    same as two PostgreSQL array literals (lines, webhook ids) ordered by line, the order
    in which the batch's records are inserted and come back from RETURNING.
    """

    compiled: list[CompiledWebhook]
    lines: list[list[int]]
    pairs: tuple[str, str] | None = None

    @classmethod
    def of(
        cls, compiled: list[CompiledWebhook], rows: Sequence[Any], *, pairs: bool
    ) -> BatchMatches:
        if not compiled:
            return cls(compiled, [])
        found = match_batch([hook.match for hook in compiled], [row.values for row in rows])
        lines = [[rows[i].line for i in matched] for matched in found]
        if not pairs:
            return cls(compiled, lines)
        # One int per pair, row index first: sorting them orders the pairs by line.
        width = len(compiled).bit_length()
        keys = sorted(i << width | k for k, matched in enumerate(found) for i in matched)
        mask = (1 << width) - 1
        ids = [hook.id for hook in compiled]
        return cls(
            compiled,
            lines,
            (
                sql.array(rows[key >> width].line for key in keys),
                sql.array(ids[key & mask] for key in keys),
            ),
        )

    def webhook_ids(self) -> list[int]:
        """The webhooks that matched at least one row, in id order."""
        pairs = zip(self.compiled, self.lines, strict=True)
        return sorted(hook.id for hook, found in pairs if found)


class WebhookTrigger:
    """`webhooks_trigger` for a file ingest, with the matching done ahead of time: the
    `cdr.contracts.BatchListener` that `WebhooksConfig.ready` registers with ingest.

    `prepare` runs on the ingest's read-ahead thread (no database there): it matches the
    whole batch while the database is still storing the previous one. The call, in the
    batch's transaction, then keeps the matches of the records that were new. One firing
    path per database: on PostgreSQL always `statement`, inside the statement that stores
    the batch (the matched webhooks' rows locked first); on SQLite always `stored`. If the
    webhooks changed in between, the batch is matched again, here, against the new ones.
    """

    def __init__(self) -> None:
        self.compiled: list[CompiledWebhook] = []
        self.postgres = connection.vendor == "postgresql"
        self.in_statement = self.postgres

    def refresh(self, layout: Layout) -> None:
        self.compiled = webhooks_compiled(layout)

    def prepare(self, layout: Layout, rows: Sequence[Any]) -> BatchMatches:
        return BatchMatches.of(self.compiled, rows, pairs=self.postgres)

    def _current(self, layout: Layout, rows: Sequence[Any], prepared: Any) -> BatchMatches:
        """`prepared`, or the batch matched again if the webhooks changed since."""
        self.refresh(layout)
        if isinstance(prepared, BatchMatches) and prepared.compiled is self.compiled:
            return prepared
        return self.prepare(layout, rows)

    def stored(self, layout: Layout, stored: list[StoredRecord], prepared: Any = None) -> None:
        """SQLite: fire for the records the batch newly stored (see `webhooks_trigger`)."""
        self.refresh(layout)
        if not isinstance(prepared, BatchMatches) or prepared.compiled is not self.compiled:
            webhooks_trigger(layout, stored)
            return
        ids = {record.line: record.id for record in stored}
        _fire(
            prepared.compiled,
            [[ids[n] for n in matched if n in ids] for matched in prepared.lines],
        )

    def dry_run(self, layout: Layout, rows: Sequence[Row]) -> dict[str, int]:
        """How many of `rows` each enabled webhook would fire for, by name (nothing stored)."""
        if not self.compiled:
            return {}
        found = match_batch([hook.match for hook in self.compiled], [row.values for row in rows])
        pairs = zip(self.compiled, found, strict=True)
        return {hook.name: len(matched) for hook, matched in pairs if matched}

    def statement(self, layout: Layout, rows: Sequence[Any], prepared: Any) -> StatementTail | None:
        """PostgreSQL: the batch's deliveries and statistics as part of the statement that
        stores it (None when no row matches), so the new records never come back to Python.

        Called in the batch's transaction before the INSERT; locks the matched webhooks'
        rows first, in id order, so that concurrent ingests queue behind each other instead
        of deadlocking and a delete waits for the batch, and leaves out any deleted meanwhile.
        """
        matches = self._current(layout, rows, prepared)
        matched = matches.webhook_ids()
        if not matched or matches.pairs is None:
            return None
        live = sql.webhooks_lock(matched)
        if not live:
            return None
        gone = sorted(set(matched) - live)
        skipped = webhooks_license_problem() is not None
        now = timezone.now()
        defaults = initial_state(now, skipped=skipped)
        ctes, select = sql.batch_tail(defaults, gone=bool(gone), skipped=skipped)
        params = {f"wh_{c}": value for c, value in defaults.items()}
        params["wh_event_suffix"] = secrets.token_hex(8)
        params["wh_sequence"] = _delivery_id_sequence()
        params["wh_lines"], params["wh_webhooks"] = matches.pairs
        params["wh_now"] = now
        if gone:
            params["wh_gone"] = sql.array(gone)
        return StatementTail(ctes, select, params, _ignore if skipped else _enqueue_after_commit)


def _ignore(result: tuple[Any, ...]) -> None:
    pass


def _enqueue_after_commit(result: tuple[Any, ...]) -> None:
    pending = result[0]
    if pending:
        transaction.on_commit(lambda: deliveries_enqueue(sorted(pending)))


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
        transaction.on_commit(lambda: deliveries_enqueue(pending))


def _hits_add(hits: dict[int, int], now: Any) -> set[int]:
    """SQLite (one writer at a time, so no row locks): add the hits; the ids of the webhooks
    that still exist (one deleted meanwhile gets no deliveries)."""
    return {
        webhook_id
        for webhook_id in sorted(hits)
        if Webhook.objects.filter(pk=webhook_id).update(
            hit_count=F("hit_count") + hits[webhook_id], last_hit_at=now
        )
    }


_sequence: BoundedCache[str, str] = BoundedCache(max_entries=1)


def _delivery_id_sequence() -> str:
    cached = _sequence.get("webhooks_delivery")
    if cached is None:
        cached = _sequence.setdefault("webhooks_delivery", sql.delivery_id_sequence())
    return cached


def _deliveries_insert(
    webhook_ids: list[int], cdr_ids: list[int], now: Any, *, skipped: bool
) -> list[int]:
    """SQLite: one delivery per (webhook, cdr) pair; the ids of those to send."""
    defaults = initial_state(now, skipped=skipped)
    rows = [
        Delivery(webhook_id=w, cdr_id=c, event_id=new_event_id(), **defaults)
        for w, c in zip(webhook_ids, cdr_ids, strict=True)
    ]
    Delivery.objects.bulk_create(rows, batch_size=500)
    return [] if skipped else [row.pk for row in rows]
