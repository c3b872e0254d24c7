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
 |    |  |      handed (again) to the broker, stays pending (a rate-limited webhook's
 |    |  |      backlog: one id per sweep, the claim takes its oldest due one)
 |    |  +-- sweeper: lease() ended, its worker died mid-send
 |    v
 |   claim (pending or retrying): due, webhook active (enabled, not paused), not held
 |    |     back as slow, within its rate limit (`rate_slot_take`); one worker wins each row
 |    v
 |  sending ---> retrying  (transient failure: due again at now + retry_delay (schedule,
 |    |             |       Retry-After); reason says why, in plain words) --> claim again
 |    +--> succeeded  (2xx answer)
 |    +--> failed     (permanent answer, schedule exhausted, no retry wanted,
 |    |                record gone or unrenderable)
 |    +--> skipped    (licence lapsed since the match)
 |
 |  pending | retrying --> held  (its webhook was paused after WEBHOOK_PAUSE_AFTER of
 |                                uninterrupted failure, or disabled by the operator; the
 |                                sweeper also holds any a paused/disabled webhook still has)
 |  held --> pending   (resume, or enable, of a webhook that is then active: in id order,
 |                      a fresh retry schedule)
 |  held --> skipped   (enable with drop_held: reason "dropped when the webhook was enabled")
 |
 +--- requeue (redeliver, one or in bulk): succeeded | failed | skipped | pending
      -> pending, a fresh retry schedule, the same webhook-id; never one being sent

A webhook's own state follows its event deliveries' attempts (`webhooks_pause_due`):
a failed attempt starts (`failing_since`) or extends (`consecutive_failures`) a run of
failures, a success ends it; a run older than WEBHOOK_PAUSE_AFTER with at least
PAUSE_MIN_FAILURES failed attempts pauses the webhook (once: the alert e-mail goes with
that transition) and holds its open deliveries. `webhook_resume` and
`webhook_enabled_change` undo it.

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
from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from webhooks import alerts, http, sql
from webhooks.models import Delivery, Webhook

log = logging.getLogger(__name__)

JITTER = 0.2
MAX_RETRY_AFTER = 24 * 3600
# A pending delivery handed to the broker is not handed again before this, unless it ran.
ENQUEUE_GRACE = timedelta(seconds=30)
SWEEP_LIMIT = 1000
# Deliveries requeued per statement: SQLite caps the number of parameters in one.
REQUEUE_CHUNK = 500
# The states a delivery may be claimed from.
CLAIMABLE = (Delivery.Status.PENDING, Delivery.Status.RETRYING)
# A run of failures pauses its webhook only with at least this many failed attempts: one
# attempt after a long quiet spell must not pause a webhook that failed once long ago.
PAUSE_MIN_FAILURES = 3


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
    # A delivery created (or retried) for a webhook paused or disabled meanwhile waits held.
    stopped_open = Delivery.objects.filter(
        status__in=CLAIMABLE, kind=Delivery.Kind.EVENT, webhook_id__in=stopped_webhooks()
    )
    deliveries_hold(set(stopped_open.values_list("webhook_id", flat=True)), now=now)
    limited = set(
        Webhook.objects.filter(rate_limit_per_minute__isnull=False).values_list("pk", flat=True)
    )
    open_due = (
        Delivery.objects.filter(status__in=CLAIMABLE, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        # A slow receiver's backlog waits here, not in the queue ahead of everyone else's.
        .exclude(webhook_id__in=held_webhooks(now))
    )
    due = list(
        open_due.exclude(webhook_id__in=limited)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    # A rate-limited webhook's backlog needs one task, not one per batch: its claim takes
    # the oldest due delivery whatever id it was given (`_limited_claim`).
    for webhook_id in sorted(limited):
        first = open_due.filter(webhook_id=webhook_id).order_by("pk").values_list("pk", flat=True)
        due += list(first[:1])
    if due:
        Delivery.objects.filter(pk__in=due, status__in=CLAIMABLE).update(
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
    rows: list[tuple[Any, ...]] = []
    # An operator's test send (hold_slow False) is one request: never rate-limited.
    if hold_slow and limited_webhooks():
        limited = sorted(
            set(
                Delivery.objects.filter(pk__in=ids, webhook_id__in=limited_webhooks())
                .order_by()
                .values_list("webhook_id", flat=True)
            )
        )
        if limited:
            ids = list(
                Delivery.objects.filter(pk__in=ids)
                .exclude(webhook_id__in=limited)
                .values_list("pk", flat=True)
            )
            for webhook_id in limited:
                rows += _limited_claim(webhook_id, now)
    rows += _claim_rows(ids, now, hold_slow=hold_slow) if ids else []
    claimed = []
    for row in sorted(rows):
        delivery = Delivery(**dict(zip(_CLAIMED_FIELDS, row, strict=True)))
        delivery.status = Delivery.Status.SENDING
        claimed.append(delivery)
    return claimed


def _claim_rows(ids: Sequence[int], now: datetime, *, hold_slow: bool) -> list[tuple[Any, ...]]:
    ops = connection.ops
    return sql.deliveries_claim(
        ids,
        _CLAIMED_FIELDS,
        sending=Delivery.Status.SENDING,
        claimable=CLAIMABLE,
        until=ops.adapt_datetimefield_value(now + lease()),
        now=ops.adapt_datetimefield_value(now),
        held=held_webhooks(now).query.sql_with_params() if hold_slow else None,
        stopped=stopped_webhooks().query.sql_with_params(),
        event=Delivery.Kind.EVENT,
    )


def stopped_webhooks() -> QuerySet[Webhook]:
    """The ids of the webhooks whose event deliveries wait held: disabled, or paused."""
    return Webhook.objects.filter(Q(enabled=False) | Q(paused_at__isnull=False)).values("pk")


LIMITED_CACHE_SECONDS = 2.0
_limited: BoundedCache[str, frozenset[int]] = BoundedCache(max_entries=1)


def limited_webhooks() -> frozenset[int]:
    """The ids of the rate-limited webhooks, cached per process for a moment (like a
    worker's webhook snapshots): a claim with none to limit costs no extra statement, and a
    new limit takes effect within two seconds."""
    cached = _limited.get("ids")
    if cached is None:
        cached = frozenset(
            Webhook.objects.filter(rate_limit_per_minute__isnull=False).values_list("pk", flat=True)
        )
        _limited.set("ids", cached, max_age=LIMITED_CACHE_SECONDS)
    return cached


def rate_interval(limit: int) -> timedelta:
    return timedelta(seconds=60 / limit)


def _limited_claim(webhook_id: int, now: datetime) -> list[tuple[Any, ...]]:
    """Claim the oldest due delivery of a rate-limited webhook, if its next send slot has
    come, and hand the rest of its backlog to a task due at the following slot.

    The slot is taken by one conditional UPDATE of the webhook's row (`rate_next_at` moved
    on by 60 / limit seconds only where it had passed): the database lets one claim win each
    slot, across every worker and process, on PostgreSQL and SQLite alike. Sends are evenly
    spaced, so no minute ever holds more than the limit. The oldest first: a backlog (a
    resumed webhook's held deliveries) leaves in order."""
    oldest = list(
        Delivery.objects.filter(webhook_id=webhook_id, status__in=CLAIMABLE)
        .filter(next_attempt_at__lte=now)
        .exclude(kind=Delivery.Kind.EVENT, webhook_id__in=stopped_webhooks())
        .order_by("pk")
        .values_list("pk", flat=True)[:2]
    )
    if not oldest:
        return []
    limit = (
        Webhook.objects.filter(pk=webhook_id)
        .values_list("rate_limit_per_minute", flat=True)
        .first()
    )
    if limit is None:  # removed within the cache's two seconds: no slot to wait for
        return _claim_rows(oldest[:1], now, hold_slow=True)
    interval = rate_interval(limit)
    if not rate_slot_take(webhook_id, now, interval):
        return []  # not yet: the claim that took the current slot sends the next one on time
    rows = _claim_rows(oldest[:1], now, hold_slow=False)
    if len(oldest) > 1:
        # The next send of this webhook is due at the next slot: one task, then, for it.
        transaction.on_commit(lambda: delivery_enqueue_at(oldest[1], interval))
    return rows


def rate_slot_take(webhook_id: int, now: datetime, interval: timedelta) -> bool:
    """Take the webhook's current send slot, if it has come: one atomic UPDATE (PostgreSQL
    re-checks the condition on the row it waited for; SQLite runs one writer at a time)."""
    return bool(
        Webhook.objects.filter(pk=webhook_id)
        .filter(Q(rate_next_at__isnull=True) | Q(rate_next_at__lte=now))
        .update(rate_next_at=now + interval)
    )


def delivery_enqueue_at(delivery_id: int, delay: timedelta) -> None:
    """Hand one delivery to the workers after `delay` (a rate-limited webhook's next slot)."""
    from webhooks.tasks import deliver_many

    try:
        deliver_many.apply_async([[delivery_id]], countdown=delay.total_seconds())
    except Exception as exc:  # broker down: the sweeper hands the backlog out again
        log.warning("could not enqueue delivery %s (%s); the sweeper will", delivery_id, exc)


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """One delivery, whatever its webhook's receiver is doing: an operator's test send."""
    claimed = deliveries_claim(ids=[delivery_id], now=now, hold_slow=False)
    return claimed[0] if claimed else None


# --- outcomes ----------------------------------------------------------------------------


def deliveries_skip(skipped: dict[str, list[int]], *, now: datetime) -> None:
    """Finish as skipped, with their reason, claimed deliveries that must not leave (the
    licence lapsed since the match)."""
    for reason, ids in skipped.items():
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.SKIPPED, reason=reason, claimed_until=None, finished_at=now
        )


def deliveries_unclaim_held(ids: Sequence[int]) -> None:
    """Hold claimed event deliveries whose webhook was paused or disabled since the claim:
    unsent, so the claim's attempt is not counted."""
    Delivery.objects.filter(pk__in=ids).update(
        status=Delivery.Status.HELD,
        reason="held: the webhook was paused or disabled",
        claimed_until=None,
        attempt_count=F("attempt_count") - 1,
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


def failure_words(response: http.Response) -> str:
    """What went wrong with an attempt, in words an operator reads in the delivery list."""
    error = response.error or "no answer"
    if response.status_code:
        return f"the receiver answered {error}"
    what = {
        "dns": "the receiver's host name did not resolve",
        "connect": "could not connect to the receiver",
        "tls": "the TLS handshake with the receiver failed",
        "timeout": "the receiver did not answer in time",
        "policy": "the destination is not allowed",
    }.get(response.error_class, "the send failed")
    return f"{what}: {error}"


def outcome(delivery: Delivery, response: http.Response, *, retry: bool, now: datetime) -> Outcome:
    """The transition a send's response makes: succeeded; failed (permanent answer, no
    retry wanted, or the schedule exhausted); or retrying, due again at the next retry, with
    the reason in plain words."""
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
            status = Delivery.Status.RETRYING
            next_attempt_at = now + timedelta(seconds=delay)
    done = status in (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED)
    reason = ""
    if status == Delivery.Status.FAILED:
        reason = response.error[:200]
    elif status == Delivery.Status.RETRYING:
        reason = failure_words(response)[:200]
    return Outcome(
        status=status,
        next_attempt_at=next_attempt_at,
        reason=reason,
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


# --- failing, paused, held (H-state) ----------------------------------------------------


def webhooks_pause_due(failing: dict[int, str], *, now: datetime) -> None:
    """Pause, in the batch's transaction, those of the webhooks whose attempts all failed in
    this batch (with the last failure's words) whose run of failures — counted with the
    batch's other figures by `sql.webhook_counters_add` — has lasted WEBHOOK_PAUSE_AFTER
    with at least PAUSE_MIN_FAILURES failed attempts; hold their open deliveries. Only the
    transaction that makes the transition sends the alert: once per pause."""
    cutoff = now - timedelta(seconds=settings.WEBHOOK_PAUSE_AFTER)
    for webhook_id in sorted(failing):  # one order everywhere: no deadlock between workers
        due = Webhook.objects.filter(
            pk=webhook_id,
            paused_at__isnull=True,
            consecutive_failures__gte=PAUSE_MIN_FAILURES,
            failing_since__lte=cutoff,
        )
        since = due.values_list("failing_since", flat=True).first()
        if since is None:
            continue
        reason = f"paused after {_duration(now - since)} of uninterrupted failure; the last: "
        reason += failing[webhook_id]
        if due.update(paused_at=now, paused_reason=reason[:200]):
            deliveries_hold([webhook_id], now=now)
            transaction.on_commit(lambda pk=webhook_id: alerts.webhook_paused_alert(pk))


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def deliveries_hold(webhook_ids: Iterable[int] | QuerySet[Any], *, now: datetime) -> int:
    """Hold the open (pending or retrying) event deliveries of paused or disabled webhooks:
    kept, unsent, until the webhook is active again. Test sends are not held."""
    held = 0
    for webhook_id, enabled, paused_reason in Webhook.objects.filter(
        pk__in=webhook_ids
    ).values_list("pk", "enabled", "paused_reason"):
        reason = "held: the webhook is disabled" if not enabled else f"held: {paused_reason}"
        held += Delivery.objects.filter(
            webhook_id=webhook_id, kind=Delivery.Kind.EVENT, status__in=CLAIMABLE
        ).update(status=Delivery.Status.HELD, reason=reason[:200], claimed_until=None)
    return held


def deliveries_release(webhook_id: int) -> int:
    """Send a now active webhook's held deliveries: pending and due now, with a fresh retry
    schedule, handed to the workers in id order (its rate limit, if any, keeps that order)."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update()
            .filter(webhook_id=webhook_id, status=Delivery.Status.HELD)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for start in range(0, len(ids), REQUEUE_CHUNK):
            Delivery.objects.filter(pk__in=ids[start : start + REQUEUE_CHUNK]).update(
                status=Delivery.Status.PENDING,
                schedule_start=F("attempt_count"),
                next_attempt_at=now,
                claimed_until=now + ENQUEUE_GRACE,
                reason="",
            )
        if ids:
            transaction.on_commit(lambda: deliveries_enqueue(ids))
    return len(ids)


DROPPED = "dropped by the operator when the webhook was enabled"


def deliveries_drop(webhook_id: int) -> int:
    """Finish a webhook's held deliveries as skipped: the operator chose not to send them."""
    return Delivery.objects.filter(webhook_id=webhook_id, status=Delivery.Status.HELD).update(
        status=Delivery.Status.SKIPPED, reason=DROPPED, finished_at=timezone.now()
    )


def webhook_resume(webhook_id: int) -> int:
    """End a pause: the run of failures starts afresh, and unless the webhook is disabled
    its held deliveries go, in order. Returns how many were released."""
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook_id).update(
            paused_at=None, paused_reason="", failing_since=None, consecutive_failures=0
        )
        if Webhook.objects.filter(pk=webhook_id, enabled=True).exists():
            return deliveries_release(webhook_id)
    return 0


def webhook_enabled_change(webhook_id: int, *, enabled: bool, drop_held: bool = False) -> int:
    """After the operator disabled or enabled a webhook (in their transaction): disabling
    holds its open deliveries; enabling sends the held ones (or, with `drop_held`, skips
    them), unless it is still paused. Returns how many deliveries changed."""
    if not enabled:
        return deliveries_hold([webhook_id], now=timezone.now())
    if drop_held:
        return deliveries_drop(webhook_id)
    if Webhook.objects.filter(pk=webhook_id, paused_at__isnull=True).exists():
        return deliveries_release(webhook_id)
    return 0


OPEN = (*CLAIMABLE, Delivery.Status.SENDING, Delivery.Status.HELD)


def webhooks_with_backlog(webhooks: QuerySet[Webhook]) -> QuerySet[Webhook]:
    """`webhooks` annotated with `pending_count`, its deliveries still to be sent (counted
    through the partial index of open deliveries)."""
    count = (
        Delivery.objects.filter(webhook_id=OuterRef("pk"), status__in=OPEN)
        .order_by()
        .values("webhook_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    return webhooks.annotate(
        pending_count=Coalesce(Subquery(count, output_field=IntegerField()), 0)
    )


def webhook_backlog(webhook_id: int) -> int:
    return Delivery.objects.filter(webhook_id=webhook_id, status__in=OPEN).count()


def backlog_drain_at(webhook: Webhook, pending: int) -> datetime | None:
    """When a rate-limited active webhook's backlog of `pending` should have been sent,
    one send per slot from its next one."""
    if not webhook.rate_limit_per_minute or not pending or webhook.state != Webhook.State.ACTIVE:
        return None
    now = timezone.now()
    start = max(now, webhook.rate_next_at or now)
    return start + rate_interval(webhook.rate_limit_per_minute) * (pending - 1)
