"""`/metrics`: Prometheus text exposition, computed from the database at scrape time.

Web, workers and the watcher are separate processes (and gunicorn forks several): in-process
counters would each tell a part of the story. Every value here is read from the shared
database when Prometheus scrapes, so any web process gives the same, whole answer.

It exposes counts, ages and latencies labelled with webhook names and cluster names only:
never URLs (they may carry tokens), secrets, header values or record contents. Names are
still the operator's business, so a scrape must show one of (see `metrics_access_denied`):
the bearer token METRICS_TOKEN, a source address in METRICS_ALLOWED_NETWORKS (loopback by
default), or a staff session.

Attempt latency is a histogram of the attempts started in the last 24 hours (a sliding
window, so read it with `histogram_quantile` directly rather than through `rate()`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from calltelemetry import health
from cdr.models import CdrFile
from webhooks.models import Delivery, DeliveryAttempt, Webhook

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_WINDOW = timedelta(hours=24)


def _age(name: str, documentation: str, age: float | None) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], float("nan") if age is None else age)
    return gauge


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from self._ingest(now)
        yield from self._webhooks()
        yield from self._deliveries(now)
        yield self._latency(now)
        yield _age(
            "calltelemetry_beat_heartbeat_age_seconds",
            "Seconds since the periodic sweeper last ran (NaN: never)",
            health.heartbeat_age(),
        )
        yield _age(
            "calltelemetry_watcher_heartbeat_age_seconds",
            "Seconds since the drop-folder watcher last completed a scan (NaN: never)",
            health.watcher_heartbeat_age(),
        )

    def _ingest(self, now: datetime) -> Iterator[Metric]:
        # The per-file counts, not COUNT(*) over the record tables: that is a full scan on
        # PostgreSQL once there are millions of records.
        records = CounterMetricFamily(
            "calltelemetry_records_ingested",
            "Records stored by ingest, by kind",
            labels=["kind"],
        )
        stored = dict(
            CdrFile.objects.values_list("kind").annotate(n=Sum("stored_count")).order_by()
        )
        for kind in (CdrFile.Kind.CDR, CdrFile.Kind.CMR):
            records.add_metric([kind], stored.get(kind) or 0)
        yield records

        files = GaugeMetricFamily(
            "calltelemetry_ingest_files", "Ingest records (files), by status", labels=["status"]
        )
        by_status = dict(CdrFile.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in CdrFile.Status.values:
            files.add_metric([status], by_status.get(status, 0))
        yield files

        lag = GaugeMetricFamily(
            "calltelemetry_last_file_age_seconds",
            "Seconds since the last file was received, per CUCM cluster",
            labels=["cluster"],
        )
        latest = (
            CdrFile.objects.exclude(cluster="")
            .values_list("cluster")
            .annotate(last=Max("created_at"))
            .order_by("cluster")
        )
        for cluster, last in latest:
            lag.add_metric([cluster], (now - last).total_seconds())
        yield lag

    def _webhooks(self) -> Iterator[Metric]:
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

    def _deliveries(self, now: datetime) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "calltelemetry_deliveries", "Deliveries, by current status", labels=["status"]
        )
        counts = dict(Delivery.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in Delivery.Status.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

        due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        summary = due.aggregate(n=Count("id"), oldest=Min("next_attempt_at"))
        due_count = GaugeMetricFamily(
            "calltelemetry_deliveries_due", "Pending deliveries whose next attempt is due"
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

    def _latency(self, now: datetime) -> Metric:
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


# A proxy in front of the app puts its own address in REMOTE_ADDR: a request it forwarded
# must not pass for a local one.
_FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _from_allowed_network(request: HttpRequest) -> bool:
    if any(header in request.META for header in _FORWARDED_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics_access_denied(request: HttpRequest) -> int | None:
    """None when the request may read the metrics, else the HTTP status to refuse it with.

    A bearer token, when one is sent, must be METRICS_TOKEN (a wrong token is refused even
    from an allowed network, so a misconfigured scraper shows up at once). Without one, the
    source address must be in METRICS_ALLOWED_NETWORKS and the request not forwarded by a
    proxy, or the session must be a staff member's. A signed-in non-staff user gets 403,
    anyone else 401.
    """
    token = _bearer_token(request)
    if token is not None:
        expected = settings.METRICS_TOKEN
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return 401
    if _from_allowed_network(request):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return None if user.is_active and user.is_staff else 403
    return 401


def metrics(request: HttpRequest) -> HttpResponse:
    denied = metrics_access_denied(request)
    if denied is not None:
        response = HttpResponse(
            "Metrics need a bearer token (METRICS_TOKEN), an address in "
            "METRICS_ALLOWED_NETWORKS or a staff session.\n",
            status=denied,
            content_type="text/plain",
        )
        if denied == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
