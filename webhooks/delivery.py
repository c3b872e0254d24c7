"""Delivering webhook events in batches: claim, sign, send, record the outcomes, schedule
retries.

The database holds all delivery state. A worker claims the due deliveries of a batch with one
conditional UPDATE (only one worker can win each delivery), sends them through
`webhooks.http` (concurrently on a small per-process thread pool, so one slow receiver does
not hold up the rest of the batch, and each send within WEBHOOK_TIMEOUT), then records every
outcome in one transaction: one INSERT of the attempt rows, one UPDATE of the deliveries,
one UPDATE of the counters per webhook. Retries are rows with a future `next_attempt_at`,
picked up by the sweeper; a delivery whose worker died stays `sending` until its lease ends,
then is retried.

A slow receiver still holds the worker process that sends to it for up to WEBHOOK_TIMEOUT
per batch. So that it cannot take every process (a backlog of its deliveries would fill
every batch), a webhook whose receiver is slow right now gets no new claims while one of its
deliveries is being sent: it keeps at most the processes it already has, and the other
webhooks' deliveries flow on the rest. Its skipped deliveries stay due for the sweeper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from licensing.gating import webhooks_license_problem
from webhooks import http, redaction
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import StoredCdr, payload_body, stored_cdrs

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MASK = redaction.MASK
JITTER = 0.2
MAX_RETRY_AFTER = 24 * 3600


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    if not secret.startswith(SECRET_PREFIX):
        return f"a secret starts with {SECRET_PREFIX}"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError:
        return f"after {SECRET_PREFIX} a secret is base64"
    if not 24 <= len(key) <= 64:
        return "a secret holds 24 to 64 bytes"
    return None


def sign(*, secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1: base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"."""
    key = base64.b64decode(secret[len(SECRET_PREFIX) :])
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def request_headers(
    webhook: Webhook, custom: list[tuple[str, str]], event_id: str, body: bytes
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers to send, and the same with every secret value masked (for the log)."""
    timestamp = int(timezone.now().timestamp())
    headers = {name: value for name, value in custom}
    redacted = {name: MASK for name, _ in custom}
    ours = {
        "Content-Type": "application/json",
        "User-Agent": http.USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
    }
    if webhook.secret:
        ours["webhook-signature"] = sign(
            secret=webhook.secret, event_id=event_id, timestamp=timestamp, body=body
        )
    # Our protocol headers win over a custom header of the same name.
    lowered = {name.lower() for name in ours}
    headers = {k: v for k, v in headers.items() if k.lower() not in lowered} | ours
    redacted = {k: v for k, v in redacted.items() if k.lower() not in lowered} | ours
    if "webhook-signature" in redacted:
        redacted["webhook-signature"] = "v1," + MASK
    return headers, redacted


def retry_delay(position: int, retry_after: float | None) -> float | None:
    """Seconds until attempt `position + 1`, or None when the schedule is exhausted."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if position > len(schedule):
        return None
    delay = schedule[position - 1] * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


# At most this many deliveries are claimed at once (and sent to one task): every one of them
# is sent at the same time on the thread pool, so a batch lasts at most one request's worst
# case (WEBHOOK_TIMEOUT, for all of it), well inside the lease and the task's time limits.
BATCH_MAX = 25
# Beyond one attempt's bound, a batch reads and writes the database: room for a slow one.
DATABASE_SECONDS = 20.0


def batch_seconds() -> float:
    """How long a batch may take: its sends run at once, each bounded by WEBHOOK_TIMEOUT as
    a whole, then one transaction records them. The task's soft time limit."""
    return settings.WEBHOOK_TIMEOUT + DATABASE_SECONDS


def lease() -> timedelta:
    """How long a claimed delivery stays `sending` before the sweeper takes it back: beyond
    the task's hard time limit (`batch_seconds() + 10`), so a delivery is never taken back
    from a task that may still be running."""
    return timedelta(seconds=batch_seconds() + 20)


def slow_seconds() -> float:
    """A send running longer than this marks its receiver as slow."""
    return settings.WEBHOOK_TIMEOUT / 2


def held_webhooks(now: datetime) -> QuerySet[Delivery]:
    """The ids of the webhooks that get no new claims now: one of their deliveries is being
    sent (its lease still running), and their receiver is slow — that send started more
    than `slow_seconds()` ago, or their last attempt timed out."""
    started_before = now + lease() - timedelta(seconds=slow_seconds())
    return (
        Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_until__gt=now)
        .filter(Q(claimed_until__lt=started_before) | Q(webhook__last_status="timeout"))
        .order_by()
        .values("webhook_id")
    )


_CLAIM_SQL = """
    UPDATE webhooks_delivery
       SET status = %s, claimed_until = %s, attempt_count = attempt_count + 1
     WHERE {ids} AND status = %s AND next_attempt_at <= %s{held}
 RETURNING id, webhook_id, cdr_id, kind, event_id, body, attempt_count, schedule_start
"""
_CLAIMED_FIELDS = (
    "id", "webhook_id", "cdr_id", "kind", "event_id", "body", "attempt_count", "schedule_start",
)  # fmt: skip
WEBHOOK_CACHE_SECONDS = 2.0
_webhooks: BoundedCache[int, tuple[Webhook, list[tuple[str, str]]]] = BoundedCache(max_entries=1000)


def webhook_snapshot(webhook_id: int) -> tuple[Webhook, list[tuple[str, str]]]:
    """The webhook and its custom headers, cached per process for a moment: a busy worker
    sends many deliveries of one webhook, and an edit takes effect within two seconds."""
    cached = _webhooks.get(webhook_id)
    if cached is not None:
        return cached
    webhook = Webhook.objects.get(pk=webhook_id)
    headers = list(webhook.headers.values_list("name", "value"))
    _webhooks.set(webhook_id, (webhook, headers), max_age=WEBHOOK_CACHE_SECONDS)
    return webhook, headers


def deliveries_claim(
    *, ids: Sequence[int], now: datetime | None = None, hold_slow: bool = True
) -> list[Delivery]:
    """Take the due deliveries among `ids` for this worker: one conditional UPDATE, and each
    row can be won by one worker only; it returns what the send needs (no second query).
    With `hold_slow`, those of a webhook in `held_webhooks` are left due (see the module
    docstring)."""
    if not ids:
        return []
    now = now or timezone.now()
    ops = connection.ops
    if connection.vendor == "postgresql":
        where, id_params = "id = ANY(%s)", [list(ids)]
    else:
        where, id_params = f"id IN ({', '.join(['%s'] * len(ids))})", list(ids)
    held, held_params = "", []
    if hold_slow:
        subquery, subquery_params = held_webhooks(now).query.sql_with_params()
        held, held_params = f" AND webhook_id NOT IN ({subquery})", list(subquery_params)
    with connection.cursor() as cursor:
        slow = _slow_webhooks(cursor, ids) if hold_slow else []
        # Claims of a webhook whose last attempt timed out take turns (see _slow_webhooks).
        with transaction.atomic() if slow else nullcontext():
            for webhook_id in slow:  # in id order: no deadlock between workers
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_CLAIM_LOCK, webhook_id])
            cursor.execute(
                _CLAIM_SQL.format(ids=where, held=held),
                [
                    Delivery.Status.SENDING,
                    ops.adapt_datetimefield_value(now + lease()),
                    *id_params,
                    Delivery.Status.PENDING,
                    ops.adapt_datetimefield_value(now),
                    *held_params,
                ],
            )
            rows = cursor.fetchall()
    claimed = []
    for row in sorted(rows):
        delivery = Delivery(**dict(zip(_CLAIMED_FIELDS, row, strict=True)))
        delivery.status = Delivery.Status.SENDING
        claimed.append(delivery)
    return claimed


# The first key of PostgreSQL advisory locks taken by claims, per slow webhook (the second).
_CLAIM_LOCK = 0x57484B43


def _slow_webhooks(cursor: Any, ids: Sequence[int]) -> list[int]:
    """PostgreSQL: the webhooks of `ids` whose last attempt timed out, in id order.

    Each claim sees the database as its statement began: two workers could both find that no
    delivery of such a webhook is being sent, and both claim a batch of it (its batches
    finish at the same moment, so they would, every time). Their claims take turns under an
    advisory lock, each seeing the previous one committed. SQLite runs one writer at a time.
    """
    if connection.vendor != "postgresql":
        return []
    cursor.execute(
        "SELECT DISTINCT w.id FROM webhooks_webhook w "
        "JOIN webhooks_delivery d ON d.webhook_id = w.id "
        "WHERE d.id = ANY(%s) AND w.last_status = 'timeout' ORDER BY w.id",
        [list(ids)],
    )
    return [webhook_id for (webhook_id,) in cursor.fetchall()]


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """One delivery, whatever its webhook's receiver is doing: an operator's test send."""
    claimed = deliveries_claim(ids=[delivery_id], now=now, hold_slow=False)
    return claimed[0] if claimed else None


def deliveries_attempt(*, ids: Sequence[int]) -> dict[int, DeliveryAttempt | None]:
    """Run by the worker for a batch of deliveries: claim the due ones, send, record. Maps
    each delivery that was claimed to its attempt (None: skipped or failed without a send)."""
    results: dict[int, DeliveryAttempt | None] = {}
    for start in range(0, len(ids), BATCH_MAX):
        claimed = deliveries_claim(ids=ids[start : start + BATCH_MAX])
        if claimed:
            results.update(deliveries_send(deliveries=claimed, trigger="scheduled"))
    return results


def delivery_send(
    *, delivery: Delivery, trigger: str, retry: bool = True
) -> DeliveryAttempt | None:
    """Send a claimed delivery once and record the outcome (and the next retry, if any)."""
    return deliveries_send(deliveries=[delivery], trigger=trigger, retry=retry)[delivery.pk]


# --- sending ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Send:
    delivery: Delivery
    webhook: Webhook
    body: bytes
    headers: dict[str, str]
    redacted: dict[str, str]
    rendered: bool
    record: StoredCdr | None
    started_at: datetime | None = None
    response: http.Response | None = None


_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _send(job: _Send) -> _Send:
    job.started_at = timezone.now()
    try:
        job.response = http.post(job.webhook.url, body=job.body, headers=job.headers)
    except Exception as exc:  # never lose the batch over one request
        log.exception("delivery %s: unexpected error while sending", job.delivery.pk)
        job.response = http.Response(error_class="connect", error=f"{type(exc).__name__}: {exc}")
    return job


def _send_all(jobs: list[_Send]) -> None:
    """Send every job: one inline, several at once on this process's thread pool (each
    request holds one keep-alive connection of the destination's pool)."""
    global _pool
    if len(jobs) == 1:
        _send(jobs[0])
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=BATCH_MAX, thread_name_prefix="webhook-send")
    for _ in _pool.map(_send, jobs):
        pass


def deliveries_send(
    *, deliveries: Sequence[Delivery], trigger: str, retry: bool = True
) -> dict[int, DeliveryAttempt | None]:
    """Send claimed deliveries once each and record the outcomes (and next retries)."""
    results: dict[int, DeliveryAttempt | None] = {}
    if not deliveries:
        return results
    license_problem = webhooks_license_problem()
    snapshots = {}
    for webhook_id in sorted({d.webhook_id for d in deliveries}):
        try:
            snapshots[webhook_id] = webhook_snapshot(webhook_id)
        except Webhook.DoesNotExist:  # deleted since the claim, and its deliveries with it
            pass
    skipped: defaultdict[str, list[int]] = defaultdict(list)
    sendable = []
    for delivery in deliveries:
        if delivery.webhook_id not in snapshots:
            results[delivery.pk] = None
            continue
        problem = license_problem
        webhook = snapshots[delivery.webhook_id][0]
        if problem is None and not webhook.enabled and delivery.kind == Delivery.Kind.EVENT:
            problem = "the webhook is disabled"
        if problem is not None:
            # A license can lapse between the match and the send: nothing leaves then.
            reason = ("license: " if "license" in problem.lower() else "") + problem
            skipped[reason[:200]].append(delivery.pk)
            results[delivery.pk] = None
        else:
            sendable.append(delivery)

    records = stored_cdrs(d.cdr_id for d in sendable if d.cdr_id is not None)
    # Deliveries that fail without a send, no retry can help them: (delivery, reason, label).
    unsent: list[tuple[Delivery, str, str]] = []
    jobs: list[_Send] = []
    for delivery in sendable:
        webhook, custom = snapshots[delivery.webhook_id]
        record = records.get(delivery.cdr_id) if delivery.cdr_id is not None else None
        rendered = not delivery.body
        if rendered:
            # Rendered once, at the first send, and kept: every retry and redelivery sends
            # exactly these bytes.
            if record is None:
                unsent.append((delivery, "the record was deleted before it could be sent", "gone"))
                results[delivery.pk] = None
                continue
            try:
                delivery.body = payload_body(name=webhook.name, meta=webhook.meta, cdr=record.cdr())
            except Exception as exc:  # one stored record must never hold back its batch
                log.warning(
                    "delivery %s: cannot render record %s: %s",
                    delivery.pk,
                    record.id,
                    exc,
                    extra={"webhook": webhook.pk, "delivery": delivery.pk, "error_class": "render"},
                )
                unsent.append(
                    (
                        delivery,
                        "render: the stored record cannot be rendered "
                        f"({type(exc).__name__}: {exc})",
                        "render",
                    )
                )
                results[delivery.pk] = None
                continue
        body = delivery.body.encode()
        headers, redacted = request_headers(webhook, custom, delivery.event_id, body)
        jobs.append(_Send(delivery, webhook, body, headers, redacted, rendered, record))

    _send_all(jobs)
    now = timezone.now()
    with transaction.atomic():
        finished = {"claimed_until": None, "finished_at": now}
        for reason, ids in skipped.items():
            Delivery.objects.filter(pk__in=ids).update(
                status=Delivery.Status.SKIPPED, reason=reason, **finished
            )
        if unsent:
            _record_unsent(unsent, now=now)
        if jobs:
            results.update(_record(jobs, trigger=trigger, retry=retry, now=now))
    for job in jobs:
        _log(job, results[job.delivery.pk])
    return results


# --- recording -------------------------------------------------------------------------


def _record_unsent(failures: list[tuple[Delivery, str, str]], *, now: datetime) -> None:
    """Fail at once the deliveries that cannot be sent (their record is gone, or cannot be
    rendered: no retry can help), and count them as failed."""
    failed: Counter[int] = Counter()
    labels: dict[int, str] = {}
    for delivery, reason, label in failures:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.FAILED,
            reason=reason[:200],
            last_error=reason,
            last_status_code=None,
            claimed_until=None,
            finished_at=now,
        )
        failed[delivery.webhook_id] += 1
        labels[delivery.webhook_id] = label
    for webhook_id in sorted(failed):  # one order everywhere: no deadlock between workers
        Webhook.objects.filter(pk=webhook_id).update(
            failed_count=F("failed_count") + failed[webhook_id],
            last_status=labels[webhook_id],
            last_delivery_at=now,
        )


@dataclass(slots=True)
class _Outcome:
    status: str
    next_attempt_at: datetime | None
    reason: str
    finished_at: datetime | None
    last_status: str


def _outcome(job: _Send, *, retry: bool, now: datetime) -> _Outcome:
    response = job.response
    assert response is not None
    next_attempt_at = None
    if response.ok:
        status = Delivery.Status.SUCCEEDED
    elif http.is_permanent(response) or not retry:
        status = Delivery.Status.FAILED
    else:
        delivery = job.delivery
        delay = retry_delay(delivery.attempt_count - delivery.schedule_start, response.retry_after)
        if delay is None:
            status = Delivery.Status.FAILED
        else:
            status = Delivery.Status.PENDING
            next_attempt_at = now + timedelta(seconds=delay)
    done = status in (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED)
    return _Outcome(
        status=status,
        next_attempt_at=next_attempt_at,
        reason=response.error[:200] if status == Delivery.Status.FAILED else "",
        finished_at=now if done else None,
        last_status=str(response.status_code) if response.status_code else response.error_class,
    )


# (column, PostgreSQL type) of the rows written per batch.
_ATTEMPT_COLUMNS = (
    ("delivery_id", "bigint"), ("number", "integer"), ("trigger", "varchar"),
    ("started_at", "timestamptz"), ("url", "varchar"), ("request_headers", "jsonb"),
    ("status_code", "integer"), ("latency_ms", "float8"), ("error_class", "varchar"),
    ("error", "text"), ("response_body", "text"),
)  # fmt: skip
_DELIVERY_COLUMNS = (
    ("id", "bigint"), ("status", "varchar"), ("next_attempt_at", "timestamptz"),
    ("last_status_code", "integer"), ("last_error", "text"), ("reason", "varchar"),
    ("finished_at", "timestamptz"), ("body", "text"),
)  # fmt: skip


def _rows_sql(
    columns: tuple[tuple[str, str], ...], rows: list[tuple[Any, ...]]
) -> tuple[str, list]:
    """A table expression of `rows`, with columns column1…, and its parameters.

    PostgreSQL: json_to_recordset() of ONE parameter, a JSON array of the rows: the statement
    is short and the same whatever the batch size, and the driver quotes one string (quoting
    hundreds of parameters, or typed arrays of JSON text, costs more than the rest of the
    batch). SQLite: a VALUES list."""
    if connection.vendor == "postgresql":
        keys = [f"column{i}" for i in range(1, len(columns) + 1)]
        types = ", ".join(f"{key} {kind}" for key, (_, kind) in zip(keys, columns, strict=True))
        data = json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=str)
        return f"json_to_recordset(%s) AS v({types})", [data]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"(VALUES {', '.join([row] * len(rows))}) AS v", [x for r in rows for x in r]


def _isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _record(
    jobs: list[_Send], *, trigger: str, retry: bool, now: datetime
) -> dict[int, DeliveryAttempt]:
    """Write the attempts, the deliveries' new state and the webhooks' counters: one INSERT,
    one UPDATE and one UPDATE per webhook for the whole batch, in the caller's transaction."""
    postgres = connection.vendor == "postgresql"
    adapt = _isoformat if postgres else connection.ops.adapt_datetimefield_value
    outcomes = [_outcome(job, retry=retry, now=now) for job in jobs]
    attempt_rows: list[tuple[Any, ...]] = []
    delivery_rows: list[tuple[Any, ...]] = []
    counters: dict[int, list[Any]] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        response, delivery = job.response, job.delivery
        assert response is not None
        attempt_rows.append(
            (
                delivery.pk,
                delivery.attempt_count,
                trigger,
                adapt(job.started_at),
                job.webhook.url,
                job.redacted if postgres else json.dumps(job.redacted, ensure_ascii=False),
                response.status_code,
                round(response.latency_ms, 2),
                response.error_class,
                response.error,
                response.body,
            )
        )
        delivery_rows.append(
            (
                delivery.pk,
                outcome.status,
                adapt(outcome.next_attempt_at),
                response.status_code,
                response.error,
                outcome.reason,
                adapt(outcome.finished_at),
                delivery.body if job.rendered else None,
            )
        )
        entry = counters.setdefault(job.webhook.pk, [0, 0, ""])
        entry[0] += outcome.status == Delivery.Status.SUCCEEDED
        entry[1] += outcome.status == Delivery.Status.FAILED
        entry[2] = outcome.last_status

    with connection.cursor() as cursor:
        source, params = _rows_sql(_ATTEMPT_COLUMNS, attempt_rows)
        names = ", ".join(name for name, _ in _ATTEMPT_COLUMNS)
        values = ", ".join(f"v.column{i}" for i in range(1, len(_ATTEMPT_COLUMNS) + 1))
        cursor.execute(
            f"INSERT INTO webhooks_deliveryattempt ({names}) SELECT {values} FROM {source} "
            "RETURNING id, delivery_id",
            params,
        )
        attempt_ids = {delivery_id: pk for pk, delivery_id in cursor.fetchall()}

        source, params = _rows_sql(_DELIVERY_COLUMNS, delivery_rows)
        cursor.execute(
            "UPDATE webhooks_delivery SET claimed_until = NULL, status = v.column2, "
            "next_attempt_at = v.column3, last_status_code = v.column4, last_error = v.column5, "
            "reason = v.column6, finished_at = v.column7, "
            f"body = COALESCE(v.column8, webhooks_delivery.body) FROM {source} "
            "WHERE webhooks_delivery.id = v.column1",
            params,
        )

        for webhook_id in sorted(counters):  # one order everywhere: no deadlock between workers
            delivered, failed, last_status = counters[webhook_id]
            cursor.execute(
                "UPDATE webhooks_webhook SET delivered_count = delivered_count + %s, "
                "failed_count = failed_count + %s, last_status = %s, last_delivery_at = %s "
                "WHERE id = %s",
                [delivered, failed, last_status, adapt(now), webhook_id],
            )

    attempts: dict[int, DeliveryAttempt] = {}
    for job, outcome, row in zip(jobs, outcomes, attempt_rows, strict=True):
        response, delivery = job.response, job.delivery
        assert response is not None
        delivery.status = outcome.status
        attempts[delivery.pk] = DeliveryAttempt(
            id=attempt_ids[delivery.pk],
            delivery=delivery,
            number=delivery.attempt_count,
            trigger=trigger,
            started_at=job.started_at,
            url=job.webhook.url,
            request_headers=job.redacted,
            status_code=response.status_code,
            latency_ms=row[7],
            error_class=response.error_class,
            error=response.error,
            response_body=response.body,
        )
    return attempts


def _log(job: _Send, attempt: DeliveryAttempt | None) -> None:
    if attempt is None or not log.isEnabledFor(logging.INFO):
        return
    delivery, webhook, response = job.delivery, job.webhook, job.response
    assert response is not None
    outcome = str(response.status_code) if response.status_code else response.error_class
    log.info(
        "delivery %s (%s) attempt %s to webhook %s: %s %s",
        delivery.pk,
        delivery.event_id,
        delivery.attempt_count,
        webhook.name,
        outcome,
        delivery.status,
        extra={
            "webhook": webhook.pk,
            "delivery": delivery.pk,
            "event_id": delivery.event_id,
            "cluster": job.record.cluster if job.record else None,
            "pkid": job.record.pkid if job.record else None,
            "status": delivery.status,
            "attempt": delivery.attempt_count,
            "status_code": response.status_code,
            "latency_ms": attempt.latency_ms,
            "error_class": response.error_class or None,
        },
    )
