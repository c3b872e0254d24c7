"""`/metrics`: Prometheus text exposition, computed from the database at scrape time.

Web, workers and the watcher are separate processes (and gunicorn forks several): in-process
counters would each tell a part of the story. Every value here is read from the shared
database when Prometheus scrapes, so any web process gives the same, whole answer.

It exposes counts, ages and latencies labelled with webhook names and cluster names only:
never URLs (they may carry tokens), secrets, header values or record contents. Names are
still the operator's business, so a scrape must show one of (see `metrics_access_denied`):
the bearer token METRICS_TOKEN, a source address in METRICS_ALLOWED_NETWORKS (loopback by
default), or a staff session.

The apps' own figures (ingest in cdr/metrics.py, webhooks and deliveries in
webhooks/metrics.py) are registered by their AppConfig.ready(); this module adds the
heartbeat ages and guards the endpoint.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterator
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from calltelemetry import health

# What each app measures, registered from its AppConfig.ready() in INSTALLED_APPS order:
# the project shell never imports an app (STYLE.md, "Dependency direction").
AppMetrics = Callable[[datetime], Iterator[Metric]]
_app_metrics: list[AppMetrics] = []


def app_metrics_register(collect: AppMetrics) -> None:
    """Add `collect(now)`'s metric families to every scrape (once, however often called)."""
    if collect not in _app_metrics:
        _app_metrics.append(collect)


def _age(name: str, documentation: str, age: float | None) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], float("nan") if age is None else age)
    return gauge


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        for collect in _app_metrics:
            yield from collect(now)
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
