"""Sending webhook events in batches: render, sign, send, record the attempts.

A worker claims the due deliveries of a batch (`lifecycle.deliveries_claim`), sends them
through `webhooks.http` (concurrently on a small per-process thread pool, so one slow
receiver does not hold up the rest of the batch, and each send within WEBHOOK_TIMEOUT),
then records every outcome in one transaction: one INSERT of the attempt rows, one UPDATE
of the deliveries (the transitions `lifecycle.outcome` decides, written by
`lifecycle.outcomes_record`), one UPDATE of the counters per webhook. A delivery's states,
retries, leases and the sweeper are in `webhooks.lifecycle`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from licensing.gating import webhooks_license_problem
from webhooks import auth, http, lifecycle, redaction, sql
from webhooks.bodies import call_body, record_body
from webhooks.lifecycle import BATCH_MAX
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import StoredCdr, stored_calls, stored_cdrs
from webhooks.templating import TemplateFailed

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MASK = redaction.MASK


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


def signing_secrets(webhook: Webhook, *, now: datetime) -> list[str]:
    """The secrets that sign a request now: the webhook's, and for WEBHOOK_SECRET_OVERLAP
    after a change the one it replaced, so a receiver that still knows only the old one
    keeps verifying."""
    keys = [webhook.secret] if webhook.secret else []
    until = webhook.previous_secret_until
    if keys and webhook.previous_secret and until is not None and until > now:
        keys.append(webhook.previous_secret)
    return keys


def request_headers(
    webhook: Webhook,
    custom: list[tuple[str, str]],
    event_id: str,
    body: bytes,
    *,
    test: bool = False,
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers to send, and the same with every secret value masked (for the log). A
    test event says so (`webhook-test: true`), so a receiver can keep it out of its data.
    The Authorization of the webhook's `auth` is added at send time (`_post`): an OAuth2
    token is fetched then; the log gets its scheme only."""
    now = timezone.now()
    timestamp = int(now.timestamp())
    headers = {name: value for name, value in custom}
    redacted = {name: MASK for name, _ in custom}
    ours = {
        "Content-Type": webhook.content_type,
        "User-Agent": http.USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
    }
    if test:
        ours["webhook-test"] = "true"
    keys = signing_secrets(webhook, now=now)
    if keys:
        # Standard Webhooks: several signatures, space-separated; any one that verifies will do.
        ours["webhook-signature"] = " ".join(
            sign(secret=key, event_id=event_id, timestamp=timestamp, body=body) for key in keys
        )
    # Our protocol headers win over a custom header of the same name.
    lowered = {name.lower() for name in ours}
    headers = {k: v for k, v in headers.items() if k.lower() not in lowered} | ours
    redacted = {k: v for k, v in redacted.items() if k.lower() not in lowered} | ours
    if "webhook-signature" in redacted:
        redacted["webhook-signature"] = " ".join("v1," + MASK for _ in keys)
    masked_auth = auth.authorization_masked(webhook)
    if masked_auth is not None:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        redacted = {k: v for k, v in redacted.items() if k.lower() != "authorization"}
        redacted["Authorization"] = masked_auth
    return headers, redacted


def webhook_tls(webhook: Webhook) -> http.Tls | None:
    """The webhook's own TLS settings, None when it has none."""
    if not (webhook.ca_bundle or webhook.client_cert):
        return None
    return http.Tls(
        ca_bundle=webhook.ca_bundle, client_cert=webhook.client_cert, client_key=webhook.client_key
    )


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


def deliveries_attempt(*, ids: Sequence[int]) -> dict[int, DeliveryAttempt | None]:
    """Run by the worker for a batch of deliveries: claim the due ones, send, record. Maps
    each delivery that was claimed to its attempt (None: skipped or failed without a send)."""
    results: dict[int, DeliveryAttempt | None] = {}
    for start in range(0, len(ids), BATCH_MAX):
        claimed = lifecycle.deliveries_claim(ids=ids[start : start + BATCH_MAX])
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


def _post(job: _Send) -> http.Response:
    """One request with the webhook's credentials and TLS settings. An OAuth2 receiver that
    answers 401 may hold a token revoked or expired early: a new one is fetched and the
    request sent again, once."""
    webhook = job.webhook
    tls = webhook_tls(webhook)
    renewals = 1 if webhook.auth_type == Webhook.AuthType.OAUTH2 else 0
    for renew in range(renewals + 1):
        try:
            credentials = auth.authorization(webhook, tls, renew=renew > 0)
        except auth.AuthFailed as exc:
            return http.Response(error_class="auth", error=str(exc))
        headers = job.headers
        if credentials is not None:
            headers = {**headers, "Authorization": credentials}
        response = http.post(
            webhook.url, body=job.body, headers=headers, tls=tls, method=webhook.method
        )
        if response.status_code != 401:
            break
    return response


def _send(job: _Send) -> _Send:
    job.started_at = timezone.now()
    try:
        job.response = _post(job)
    except Exception as exc:  # never lose the batch over one request
        log.exception("delivery %s: unexpected error while sending", job.delivery.pk)
        job.response = http.Response(error_class="connect", error=f"{type(exc).__name__}: {exc}")
    return job


def _send_all(jobs: list[_Send]) -> None:
    """Send every job: one inline, several at once on this process's thread pool (each
    request holds one keep-alive connection of the destination's pool)."""
    global _pool
    jobs = [job for job in jobs if job.response is None]  # a failed template sends nothing
    if not jobs:
        return
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
    # Paused or disabled between the claim and now (the snapshot may be two seconds old, so
    # the database has the last word): such an event delivery is held, not sent.
    stopped: set[int] = set()
    if any(snapshot[0].state != Webhook.State.ACTIVE for snapshot in snapshots.values()):
        stopped = set(
            lifecycle.stopped_webhooks().filter(pk__in=list(snapshots)).values_list("pk", flat=True)
        )
    held: list[int] = []
    sendable = []
    for delivery in deliveries:
        if delivery.webhook_id not in snapshots:
            results[delivery.pk] = None
            continue
        problem = license_problem
        if delivery.kind == Delivery.Kind.EVENT and delivery.webhook_id in stopped:
            held.append(delivery.pk)
            results[delivery.pk] = None
            continue
        if problem is not None:
            # A license can lapse between the match and the send: nothing leaves then.
            reason = ("license: " if "license" in problem.lower() else "") + problem
            skipped[reason[:200]].append(delivery.pk)
            results[delivery.pk] = None
        else:
            sendable.append(delivery)

    records = stored_cdrs(d.cdr_id for d in sendable if d.cdr_id is not None)
    calls = stored_calls(d.call_id for d in sendable if d.call_id is not None)
    # Deliveries that fail without a send, no retry can help them: (delivery, reason, label).
    unsent: list[tuple[Delivery, str, str]] = []
    jobs: list[_Send] = []
    for delivery in sendable:
        webhook, custom = snapshots[delivery.webhook_id]
        record = records.get(delivery.cdr_id) if delivery.cdr_id is not None else None
        call = calls.get(delivery.call_id) if delivery.call_id is not None else None
        rendered = not delivery.body
        if rendered:
            # Rendered once, at the first send, and kept: every retry and redelivery sends
            # exactly these bytes.
            if record is None and call is None:
                what = "call" if delivery.call_id is not None else "record"
                unsent.append((delivery, f"the {what} was deleted before it could be sent", "gone"))
                results[delivery.pk] = None
                continue
            try:
                if call is not None:
                    delivery.body = call_body(
                        webhook=webhook, objects=call.objects(), event_id=delivery.event_id
                    )
                else:
                    assert record is not None
                    delivery.body = record_body(
                        webhook=webhook, cdr=record.cdr(), event_id=delivery.event_id
                    )
            except TemplateFailed as exc:
                # The operator's template, not the record: an attempt that sent nothing,
                # class `template`, failing this delivery alone (the body stays unrendered,
                # so a redelivery after the template is fixed renders it again).
                log.warning(
                    "delivery %s: the body template of webhook %s failed: %s",
                    delivery.pk,
                    webhook.name,
                    exc,
                    extra={
                        "webhook": webhook.pk,
                        "delivery": delivery.pk,
                        "error_class": "template",
                    },
                )
                headers, redacted = request_headers(webhook, custom, delivery.event_id, b"")
                failed = http.Response(error_class="template", error=f"template: {exc}")
                job = _Send(delivery, webhook, b"", headers, redacted, False, record)
                job.started_at, job.response = timezone.now(), failed
                jobs.append(job)
                continue
            except Exception as exc:  # one stored record must never hold back its batch
                log.warning(
                    "delivery %s: cannot render %s %s: %s",
                    delivery.pk,
                    "call" if call is not None else "record",
                    (call or record).id,
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
        test = delivery.kind == Delivery.Kind.TEST
        headers, redacted = request_headers(webhook, custom, delivery.event_id, body, test=test)
        jobs.append(_Send(delivery, webhook, body, headers, redacted, rendered, record))

    _send_all(jobs)
    now = timezone.now()
    with transaction.atomic():
        lifecycle.deliveries_skip(skipped, now=now)
        if held:
            lifecycle.deliveries_unclaim_held(held)
        if unsent:
            lifecycle.deliveries_fail_unsent(unsent, now=now)
        if jobs:
            results.update(_record(jobs, trigger=trigger, retry=retry, now=now))
    for job in jobs:
        _log(job, results[job.delivery.pk])
    return results


# --- recording -------------------------------------------------------------------------


# (column, PostgreSQL type) of the rows written per batch.


def _record(
    jobs: list[_Send], *, trigger: str, retry: bool, now: datetime
) -> dict[int, DeliveryAttempt]:
    """Write the attempts, the deliveries' new state and the webhooks' counters: one INSERT,
    one UPDATE and one UPDATE per webhook for the whole batch, in the caller's transaction."""
    postgres = connection.vendor == "postgresql"
    adapt = lifecycle.isoformat if postgres else connection.ops.adapt_datetimefield_value
    outcomes = []
    for job in jobs:
        assert job.response is not None
        outcomes.append(lifecycle.outcome(job.delivery, job.response, retry=retry, now=now))
    attempt_rows: list[tuple[Any, ...]] = []
    delivery_rows: list[tuple[Any, ...]] = []
    counters: dict[int, list[Any]] = {}
    # Event attempts per webhook, (succeeded, failed), and the last failure's words.
    health: dict[int, tuple[int, int]] = {}
    last_errors: dict[int, str] = {}
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
        if delivery.kind == Delivery.Kind.EVENT:
            succeeded, failed = health.get(job.webhook.pk, (0, 0))
            if outcome.status == Delivery.Status.SUCCEEDED:
                health[job.webhook.pk] = (succeeded + 1, failed)
            else:
                health[job.webhook.pk] = (succeeded, failed + 1)
                last_errors[job.webhook.pk] = lifecycle.failure_words(response)

    with connection.cursor() as cursor:
        attempt_ids = sql.attempts_insert(cursor, attempt_rows)
        lifecycle.outcomes_record(cursor, delivery_rows)
        for webhook_id in sorted(counters):  # one order everywhere: no deadlock between workers
            delivered, failed, last_status = counters[webhook_id]
            event_successes, event_failures = health.get(webhook_id, (0, 0))
            sql.webhook_counters_add(
                cursor,
                webhook_id,
                delivered=delivered,
                failed=failed,
                last_status=last_status,
                now=adapt(now),
                event_successes=event_successes,
                event_failures=event_failures,
            )
    lifecycle.webhooks_pause_due(
        {pk: last_errors[pk] for pk, (ok, ko) in health.items() if ko and not ok}, now=now
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
