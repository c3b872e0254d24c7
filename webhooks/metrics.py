"""What the webhooks show on `/metrics`: `WebhooksConfig.ready` registers it with the project
shell's collector (calltelemetry/metrics.py), which must not import this app.

Attempt latency is a histogram of the attempts started in the last 24 hours (a sliding
window, so read it with `histogram_quantile` directly rather than through `rate()`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q, Sum
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from webhooks.models import Delivery, DeliveryAttempt, Webhook

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_WINDOW = timedelta(hours=24)


def _webhooks() -> Iterator[Metric]:
    labels = ["webhook_id", "webhook"]
    matches = CounterMetricFamily(
        "calltelemetry_webhook_matches", "Records a webhook matched (hit_count)", labels=labels
    )
    delivered = CounterMetricFamily(
        "calltelemetry_webhook_delivered", "Deliveries that succeeded", labels=labels
    )
    failed = CounterMetricFamily(
        "calltelemetry_webhook_failed", "Deliveries that failed for good", labels=labels
    )
    enabled = GaugeMetricFamily(
        "calltelemetry_webhook_enabled", "1 when the webhook is enabled", labels=labels
    )
    rows = Webhook.objects.values_list(
        "pk", "name", "hit_count", "delivered_count", "failed_count", "enabled"
    ).order_by("pk")
    for pk, name, hits, ok, bad, on in rows:
        key = [str(pk), name]
        matches.add_metric(key, hits)
        delivered.add_metric(key, ok)
        failed.add_metric(key, bad)
        enabled.add_metric(key, int(on))
    yield from (matches, delivered, failed, enabled)


def _deliveries(now: datetime) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        "calltelemetry_deliveries", "Deliveries, by current status", labels=["status"]
    )
    counts = dict(Delivery.objects.values_list("status").annotate(n=Count("id")).order_by())
    for status in Delivery.Status.values:
        by_status.add_metric([status], counts.get(status, 0))
    yield by_status

    due = Delivery.objects.filter(
        status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING], next_attempt_at__lte=now
    )
    summary = due.aggregate(n=Count("id"), oldest=Min("next_attempt_at"))
    due_count = GaugeMetricFamily(
        "calltelemetry_deliveries_due", "Pending or retrying deliveries whose next attempt is due"
    )
    due_count.add_metric([], summary["n"])
    yield due_count
    oldest = GaugeMetricFamily(
        "calltelemetry_oldest_due_delivery_age_seconds",
        "How long the oldest due delivery has been waiting (0 when none)",
    )
    waited = (now - summary["oldest"]).total_seconds() if summary["oldest"] else 0.0
    oldest.add_metric([], max(waited, 0.0))
    yield oldest


def _latency(now: datetime) -> Metric:
    recent = DeliveryAttempt.objects.filter(
        started_at__gte=now - LATENCY_WINDOW,
        latency_ms__isnull=False,
    )
    # One query: a cumulative count per bucket, the total and the sum.
    aggregates = {
        f"le{i}": Count("id", filter=Q(latency_ms__lte=bound * 1000))
        for i, bound in enumerate(LATENCY_BUCKETS)
    }
    row = recent.aggregate(total=Count("id"), sum_ms=Sum("latency_ms"), **aggregates)
    buckets = [(str(bound), row[f"le{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
    buckets.append(("+Inf", row["total"]))
    return HistogramMetricFamily(
        "calltelemetry_delivery_attempt_latency_seconds",
        "Latency of delivery attempts started in the last 24 h (sliding window)",
        buckets=buckets,
        sum_value=(row["sum_ms"] or 0.0) / 1000,
    )


def delivery_metrics(now: datetime) -> Iterator[Metric]:
    """Per webhook matches and outcomes, deliveries by status and due, attempt latency."""
    yield from _webhooks()
    yield from _deliveries(now)
    yield _latency(now)
