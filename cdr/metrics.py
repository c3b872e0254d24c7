"""What ingest shows on `/metrics`: `CdrConfig.ready` registers it with the project shell's
collector (calltelemetry/metrics.py), which must not import this app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Max, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cdr.models import CdrFile
from cdr.zero_duration import PARAMETER, zero_duration_missing


def ingest_metrics(now: datetime) -> Iterator[Metric]:
    """Records stored, files by status and the age of the last file per cluster."""
    # The per-file counts, not COUNT(*) over the record tables: that is a full scan on
    # PostgreSQL once there are millions of records.
    records = CounterMetricFamily(
        "calltelemetry_records_ingested",
        "Records stored by ingest, by kind",
        labels=["kind"],
    )
    stored = dict(CdrFile.objects.values_list("kind").annotate(n=Sum("stored_count")).order_by())
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

    zero = GaugeMetricFamily(
        "calltelemetry_cdr_zero_duration_missing",
        "1: the cluster sent 200+ CDRs in the last 24 h and none for a never-connected call, so "
        f'"{PARAMETER}" is probably False on its CUCM; 0: fine or too few CDRs to tell',
        labels=["cluster"],
    )
    for cluster, missing in zero_duration_missing().items():
        zero.add_metric([cluster], 1 if missing else 0)
    yield zero
