"""Delivering one webhook event: claim, sign, send, record the outcome, schedule a retry.

The database holds all delivery state. A worker claims a due delivery with one conditional
UPDATE (only one worker can win it), sends it through `webhooks.http`, then writes the attempt
row and the outcome. Retries are rows with a future `next_attempt_at`, picked up by the
sweeper; a delivery whose worker died stays `sending` until its lease ends, then is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from licensing.gating import webhooks_license_problem
from webhooks import http
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import event_body

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MASK = "••••••"
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


def lease() -> timedelta:
    return timedelta(seconds=settings.WEBHOOK_TIMEOUT * 2 + 30)


_CLAIM_SQL = """
    UPDATE webhooks_delivery
       SET status = %s, claimed_until = %s, attempt_count = attempt_count + 1
     WHERE id = %s AND status = %s AND next_attempt_at <= %s
 RETURNING id, webhook_id, cdr_id, kind, event_id, body, attempt_count, schedule_start
"""
_CLAIMED_FIELDS = (
    "id", "webhook_id", "cdr_id", "kind", "event_id", "body", "attempt_count", "schedule_start",
)  # fmt: skip
WEBHOOK_CACHE_SECONDS = 2.0
_webhooks: dict[int, tuple[float, Webhook, list[tuple[str, str]]]] = {}


def webhook_snapshot(webhook_id: int) -> tuple[Webhook, list[tuple[str, str]]]:
    """The webhook and its custom headers, cached per process for a moment: a busy worker
    sends many deliveries of one webhook, and an edit takes effect within two seconds."""
    now = time.monotonic()
    cached = _webhooks.get(webhook_id)
    if cached is not None and cached[0] > now:
        return cached[1], cached[2]
    webhook = Webhook.objects.get(pk=webhook_id)
    headers = list(webhook.headers.values_list("name", "value"))
    _webhooks[webhook_id] = (now + WEBHOOK_CACHE_SECONDS, webhook, headers)
    return webhook, headers


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Take a due delivery for this worker: one conditional UPDATE that only one worker can
    win, returning what the send needs (no second query)."""
    now = now or timezone.now()
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            [
                Delivery.Status.SENDING,
                ops.adapt_datetimefield_value(now + lease()),
                delivery_id,
                Delivery.Status.PENDING,
                ops.adapt_datetimefield_value(now),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    delivery = Delivery(**dict(zip(_CLAIMED_FIELDS, row, strict=True)))
    delivery.status = Delivery.Status.SENDING
    return delivery


def delivery_attempt(*, delivery_id: int) -> DeliveryAttempt | None:
    """Run by the worker for a due delivery; None when there was nothing to do."""
    delivery = delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    return delivery_send(delivery=delivery, trigger="scheduled")


def delivery_send(
    *, delivery: Delivery, trigger: str, retry: bool = True
) -> DeliveryAttempt | None:
    """Send a claimed delivery once and record the outcome (and the next retry, if any)."""
    webhook, custom = webhook_snapshot(delivery.webhook_id)
    problem = webhooks_license_problem()
    if problem is None and not webhook.enabled and delivery.kind == Delivery.Kind.EVENT:
        problem = "the webhook is disabled"
    if problem is not None:
        # A license can lapse between the match and the send: nothing leaves then.
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.SKIPPED,
            reason=(("license: " if "license" in problem.lower() else "") + problem)[:200],
            claimed_until=None,
            finished_at=timezone.now(),
        )
        return None

    rendered = not delivery.body
    if rendered:
        # Rendered once, at the first send, and kept: every retry and redelivery sends
        # exactly these bytes.
        text = event_body(cdr_id=delivery.cdr_id, name=webhook.name, meta=webhook.meta)
        if text is None:
            Delivery.objects.filter(pk=delivery.pk).update(
                status=Delivery.Status.FAILED,
                reason="the record was deleted before it could be sent",
                claimed_until=None,
                finished_at=timezone.now(),
            )
            return None
        delivery.body = text
    body = delivery.body.encode()
    headers, redacted = request_headers(webhook, custom, delivery.event_id, body)
    started_at = timezone.now()
    response = http.post(webhook.url, body=body, headers=headers)
    now = timezone.now()

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
    finished = status in (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED)
    outcome = str(response.status_code) if response.status_code else response.error_class
    # Three statements and no BEGIN/COMMIT: each is atomic on its own, and a worker that dies
    # between them leaves the delivery "sending" until its lease ends, then it is retried.
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempt_count,
        trigger=trigger,
        started_at=started_at,
        url=webhook.url,
        request_headers=redacted,
        status_code=response.status_code,
        latency_ms=round(response.latency_ms, 2),
        error_class=response.error_class,
        error=response.error,
        response_body=response.body,
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        **({"body": delivery.body} if rendered else {}),
        status=status,
        next_attempt_at=next_attempt_at,
        claimed_until=None,
        last_status_code=response.status_code,
        last_error=response.error,
        reason="" if status != Delivery.Status.FAILED else response.error[:200],
        finished_at=now if finished else None,
    )
    counters: dict[str, object] = {"last_status": outcome, "last_delivery_at": now}
    if status == Delivery.Status.SUCCEEDED:
        counters["delivered_count"] = F("delivered_count") + 1
    elif status == Delivery.Status.FAILED:
        counters["failed_count"] = F("failed_count") + 1
    Webhook.objects.filter(pk=webhook.pk).update(**counters)
    # The record behind the delivery, for the log line, from the body rather than a query.
    record = json.loads(delivery.body).get("cdr", {})
    cluster, pkid = record.get("globalCallId_ClusterID"), record.get("pkid")
    log.info(
        "delivery %s (%s) attempt %s to webhook %s: %s %s",
        delivery.pk,
        delivery.event_id,
        delivery.attempt_count,
        webhook.name,
        outcome,
        status,
        extra={
            "webhook": webhook.pk,
            "delivery": delivery.pk,
            "event_id": delivery.event_id,
            "cluster": cluster,
            "pkid": pkid,
            "status": status,
            "attempt": delivery.attempt_count,
            "status_code": response.status_code,
            "latency_ms": attempt.latency_ms,
            "error_class": response.error_class or None,
        },
    )
    return attempt
