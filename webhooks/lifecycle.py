"""A delivery's life: every `Delivery.Status` transition, its timings, and who makes it.

Nothing else writes a delivery's status. `trigger` creates event deliveries in the state
`initial_state` gives; `delivery` sends (render, sign, HTTP, record the attempt) and asks
here for the outcome of each send and for the transition; the sweeper, the requeue (the
one redeliver, single or bulk) and the enqueue live here too.

  created (trigger, from `initial_state`; or an operator's test send, claimed at once)
     |                                     |
     | licence in force                    | no licence
     v                                     v
 +-> pending <-------------------------+   skipped (reason "license", finished)
 |    |  ^  `-- enqueue, or sweeper: due and not handed within ENQUEUE_GRACE:
 |    |  |      handed (again) to the broker, stays pending
 |    |  |                             |
 |    |  +-- sweeper: lease() ended,   |
 |    |      its worker died mid-send  |
 |    v                                |
 |   claim: due, webhook not held,     |
 |    |     one worker wins each row   |
 |    v                                |
 |  sending ---------------------------+  retry: transient failure, due again at
 |    |                                   now + retry_delay (schedule, Retry-After)
 |    +--> succeeded  (2xx answer)
 |    +--> failed     (permanent answer, schedule exhausted, no retry wanted,
 |    |                record gone or unrenderable)
 |    +--> skipped    (licence lapsed, or webhook disabled, since the match)
 |
 +--- requeue (redeliver, one or in bulk): succeeded | failed | skipped | pending
      -> pending, a fresh retry schedule, the same webhook-id; never one being sent

Timings: a pending delivery handed to the broker carries `claimed_until = now +
ENQUEUE_GRACE`, so the sweeper does not hand it again meanwhile; a claim leases the row
for `lease()`, beyond the task's hard time limit, so a delivery is never taken back from
a task that may still run; `next_attempt_at` schedules the next attempt
(`settings.WEBHOOK_RETRY_SCHEDULE`, jittered, stretched by a Retry-After answer).

A slow receiver still holds the worker process that sends to it for up to WEBHOOK_TIMEOUT
per batch. So that it cannot take every process (a backlog of its deliveries would fill
every batch), a webhook whose receiver is slow right now gets no new claims while one of its
deliveries is being sent: it keeps at most the processes it already has, and the other
webhooks' deliveries flow on the rest. Its skipped deliveries stay due for the sweeper.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from webhooks import http, sql
from webhooks.models import Delivery, Webhook

log = logging.getLogger(__name__)

JITTER = 0.2
MAX_RETRY_AFTER = 24 * 3600
# A pending delivery handed to the broker is not handed again before this, unless it ran.
ENQUEUE_GRACE = timedelta(seconds=30)
SWEEP_LIMIT = 1000
# Deliveries requeued per statement: SQLite caps the number of parameters in one.
REQUEUE_CHUNK = 500


# --- timings -----------------------------------------------------------------------------


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


# --- created -----------------------------------------------------------------------------


def initial_state(now: datetime, *, skipped: bool) -> dict[str, Any]:
    """Every column of a new event delivery but its webhook, record (or call) and event id: pending
    and due now, already counted as enqueued (the trigger enqueues it when the batch
    commits); or, without a licence, skipped and finished."""
    if skipped:
        status, reason, next_at, claimed, finished = (
            Delivery.Status.SKIPPED, "license", None, None, now,
        )  # fmt: skip
    else:
        status, reason, next_at, claimed, finished = (
            Delivery.Status.PENDING, "", now, now + ENQUEUE_GRACE, None,
        )  # fmt: skip
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


def operator_delivery_claimed(*, delivery: Delivery, now: datetime) -> Delivery:
    """Store an operator's test send (pending, due now) and claim it at once."""
    delivery.status = Delivery.Status.PENDING
    delivery.next_attempt_at = now
    delivery.save(force_insert=True)
    claimed = delivery_claim(delivery_id=delivery.pk, now=now)
    assert claimed is not None  # just created, nobody else knows it
    return claimed


# --- enqueue and sweep -------------------------------------------------------------------


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


# --- claim -------------------------------------------------------------------------------


_CLAIMED_FIELDS = (
    "id", "webhook_id", "cdr_id", "call_id", "kind", "event_id", "body", "attempt_count",
    "schedule_start",
)  # fmt: skip


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
    rows = sql.deliveries_claim(
        ids,
        _CLAIMED_FIELDS,
        sending=Delivery.Status.SENDING,
        pending=Delivery.Status.PENDING,
        until=ops.adapt_datetimefield_value(now + lease()),
        now=ops.adapt_datetimefield_value(now),
        held=held_webhooks(now).query.sql_with_params() if hold_slow else None,
    )
    claimed = []
    for row in sorted(rows):
        delivery = Delivery(**dict(zip(_CLAIMED_FIELDS, row, strict=True)))
        delivery.status = Delivery.Status.SENDING
        claimed.append(delivery)
    return claimed


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """One delivery, whatever its webhook's receiver is doing: an operator's test send."""
    claimed = deliveries_claim(ids=[delivery_id], now=now, hold_slow=False)
    return claimed[0] if claimed else None


# --- outcomes ----------------------------------------------------------------------------


def deliveries_skip(skipped: dict[str, list[int]], *, now: datetime) -> None:
    """Finish as skipped, with their reason, claimed deliveries that must not leave (the
    licence lapsed, or the webhook was disabled, since the match)."""
    for reason, ids in skipped.items():
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.SKIPPED, reason=reason, claimed_until=None, finished_at=now
        )


def deliveries_fail_unsent(failures: list[tuple[Delivery, str, str]], *, now: datetime) -> None:
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
class Outcome:
    """What one send did to its delivery: the next state and when."""

    status: str
    next_attempt_at: datetime | None
    reason: str
    finished_at: datetime | None
    last_status: str


def outcome(delivery: Delivery, response: http.Response, *, retry: bool, now: datetime) -> Outcome:
    """The transition a send's response makes: succeeded; failed (permanent answer, no
    retry wanted, or the schedule exhausted); or pending again at the next retry."""
    next_attempt_at = None
    if response.ok:
        status = Delivery.Status.SUCCEEDED
    elif http.is_permanent(response) or not retry:
        status = Delivery.Status.FAILED
    else:
        delay = retry_delay(delivery.attempt_count - delivery.schedule_start, response.retry_after)
        if delay is None:
            status = Delivery.Status.FAILED
        else:
            status = Delivery.Status.PENDING
            next_attempt_at = now + timedelta(seconds=delay)
    done = status in (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED)
    return Outcome(
        status=status,
        next_attempt_at=next_attempt_at,
        reason=response.error[:200] if status == Delivery.Status.FAILED else "",
        finished_at=now if done else None,
        last_status=str(response.status_code) if response.status_code else response.error_class,
    )


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def outcomes_record(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    """Write the sent deliveries' new states, one UPDATE for the batch: each row is
    (id, `Outcome.status`, `Outcome.next_attempt_at`, status code, error, `Outcome.reason`,
    `Outcome.finished_at`, the body rendered at this send or None), datetimes adapted."""
    sql.outcomes_update(cursor, rows)


# --- requeue (redeliver) -----------------------------------------------------------------


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
