"""Operator actions over many stored rows: a dry run of conditions, and bulk redelivery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F

from cdr.models import Call, Cdr, RecordLayout
from cdr.parsing import split_line
from webhooks.call_matching import CallRules
from webhooks.call_trigger import CHUNK, calls_load
from webhooks.lifecycle import deliveries_requeue
from webhooks.matching import Rule, compile_rules
from webhooks.models import Delivery, Webhook

DRY_RUN_DEFAULT_LIMIT = 1000
DRY_RUN_MAX_LIMIT = 100_000
DRY_RUN_SAMPLE = 10
SAMPLE_COLUMNS = (
    "id",
    "pkid",
    "cluster",
    "origination_at",
    "calling_party_number",
    "original_called_party_number",
    "final_called_party_number",
)
CALL_SAMPLE_COLUMNS = (
    "id", "cluster", "started_at", "caller", "dialed", "answered_by", "legs", "duration",
)  # fmt: skip
REDELIVERABLE = (
    Delivery.Status.FAILED,
    Delivery.Status.SUCCEEDED,
    Delivery.Status.SKIPPED,
    Delivery.Status.PENDING,
)


@dataclass
class DryRunResult:
    scope: str = Webhook.Scope.RECORD  # what `sample` holds: CDRs, or calls
    evaluated: int = 0
    matched: int = 0
    sample: list[dict[str, object]] = field(default_factory=list)


def cdrs_dry_run(
    *,
    rules: Sequence[Rule],
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DRY_RUN_DEFAULT_LIMIT,
) -> DryRunResult:
    """Evaluate AND-ed rules over stored CDRs, newest first, with the live matcher.

    Records are matched as ingest matches them: the raw line split into the file's columns,
    under a predicate compiled once per header layout. Nothing is stored or sent.
    """
    records = Cdr.objects.order_by("-id")
    if since is not None:
        records = records.filter(origination_at__gte=since)
    if until is not None:
        records = records.filter(origination_at__lt=until)
    rows = records.values_list("layout_id", "raw", *SAMPLE_COLUMNS)[: min(limit, DRY_RUN_MAX_LIMIT)]
    # Layouts are few and their field lists long: load each once, not once per row.
    layouts = RecordLayout.objects.filter(kind="cdr").in_bulk()
    matchers: dict[int, tuple[int, Callable[[Sequence[str]], bool]]] = {}
    result = DryRunResult()
    for layout_id, raw, *columns in rows.iterator(chunk_size=2000):
        if layout_id not in matchers:
            names = layouts[layout_id].fields
            index = {name: position for position, name in enumerate(names)}
            matchers[layout_id] = (len(names), compile_rules(rules, index))
        width, match = matchers[layout_id]
        values = split_line(raw)
        if len(values) < width:
            values += [""] * (width - len(values))
        result.evaluated += 1
        if match(values):
            result.matched += 1
            if len(result.sample) < DRY_RUN_SAMPLE:
                result.sample.append(dict(zip(SAMPLE_COLUMNS, columns, strict=True)))
    return result


def calls_dry_run(
    *,
    rules: Sequence[Rule],
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DRY_RUN_DEFAULT_LIMIT,
) -> DryRunResult:
    """Evaluate a call-scope webhook's rules over stored settled calls, newest first, as
    they are evaluated when a call settles (`webhooks.call_trigger`). Nothing is stored
    or sent."""
    calls = Call.objects.filter(settled_at__isnull=False, merged_into__isnull=True).order_by(
        F("started_at").desc(nulls_last=True), "-id"
    )
    if since is not None:
        calls = calls.filter(started_at__gte=since)
    if until is not None:
        calls = calls.filter(started_at__lt=until)
    rows = list(calls.values(*CALL_SAMPLE_COLUMNS)[: min(limit, DRY_RUN_MAX_LIMIT)])
    compiled = CallRules(rules)
    result = DryRunResult(scope=Webhook.Scope.CALL)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        batch = calls_load([row["id"] for row in chunk], with_legs=bool(compiled.plain))
        for row in chunk:
            facts = batch.facts.get(row["id"])
            if facts is None:  # merged or reopened meanwhile
                continue
            result.evaluated += 1
            if compiled.matches(facts, batch.legs[row["id"]], batch.leg_rules):
                result.matched += 1
                if len(result.sample) < DRY_RUN_SAMPLE:
                    result.sample.append(row)
    return result


def deliveries_redeliver(
    *,
    webhook: Webhook,
    since: datetime | None = None,
    until: datetime | None = None,
    statuses: Sequence[str] = (Delivery.Status.FAILED,),
) -> int:
    """Send again every matching delivery of a webhook (e.g. after a receiver outage), as
    `deliveries_requeue` does. Returns how many were requeued."""
    deliveries = Delivery.objects.filter(webhook=webhook, status__in=statuses).exclude(
        status=Delivery.Status.SENDING
    )
    if since is not None:
        deliveries = deliveries.filter(created_at__gte=since)
    if until is not None:
        deliveries = deliveries.filter(created_at__lt=until)
    ids = list(deliveries.values_list("pk", flat=True))
    return deliveries_requeue(ids=ids, statuses=statuses)
