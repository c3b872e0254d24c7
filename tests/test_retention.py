"""Retention: old CDRs, CMRs and finished deliveries go, in small batches; new ones stay."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from calltelemetry import retention
from calltelemetry.tasks import retention_purge
from cdr.models import Cdr, Cmr, RecordLayout
from tests.conftest import ROOT
from webhooks.models import Delivery, DeliveryAttempt, Webhook

pytestmark = pytest.mark.django_db

NOW = timezone.now()
OLD = NOW - timedelta(days=31)
NEW = NOW - timedelta(days=29)


def make_cdr(pkid: str, origination_at: datetime | None, ingested_at: datetime = NOW) -> Cdr:
    layout, _ = RecordLayout.objects.get_or_create(
        digest="cdr", defaults={"kind": "cdr", "fields": []}
    )
    cdr = Cdr.objects.create(
        layout=layout, line=1, raw="", cluster="C", pkid=pkid, origination_at=origination_at
    )
    Cdr.objects.filter(pk=cdr.pk).update(ingested_at=ingested_at)
    return cdr


def make_cmr(pkid: str, stamp_at: datetime | None, ingested_at: datetime = NOW) -> Cmr:
    layout, _ = RecordLayout.objects.get_or_create(
        digest="cmr", defaults={"kind": "cmr", "fields": []}
    )
    cmr = Cmr.objects.create(
        layout=layout, line=1, raw="", cluster="C", pkid=pkid, stamp_at=stamp_at
    )
    Cmr.objects.filter(pk=cmr.pk).update(ingested_at=ingested_at)
    return cmr


def make_delivery(
    webhook: Webhook,
    status: str,
    finished_at: datetime | None,
    created_at: datetime = NOW,
    cdr: Cdr | None = None,
) -> Delivery:
    delivery = Delivery.objects.create(
        webhook=webhook,
        cdr=cdr,
        event_id=f"evt_{Delivery.objects.count()}",
        body="{}",
        status=status,
        finished_at=finished_at,
    )
    Delivery.objects.filter(pk=delivery.pk).update(created_at=created_at)
    DeliveryAttempt.objects.create(
        delivery=delivery, number=1, started_at=created_at, url=webhook.url
    )
    return delivery


@pytest.fixture
def records() -> None:
    for n in range(5):
        make_cdr(f"old-{n}", OLD)
        make_cmr(f"old-{n}", OLD)
    # No timestamp from CUCM: ages from when it was stored.
    make_cdr("old-undated", None, ingested_at=OLD)
    make_cmr("old-undated", None, ingested_at=OLD)
    make_cdr("new-undated", None)
    for n in range(2):
        # Stored long ago but for a recent call, and the other way round: the call decides.
        make_cdr(f"new-{n}", NEW, ingested_at=OLD)
        make_cmr(f"new-{n}", NEW, ingested_at=OLD)


def delete_count(queries: CaptureQueriesContext, table: str) -> int:
    return sum(1 for q in queries.captured_queries if q["sql"].startswith(f'DELETE FROM "{table}"'))


def test_it_purges_old_records_in_batches_and_keeps_new_ones(records: None) -> None:
    assert (Cdr.objects.count(), Cmr.objects.count()) == (9, 8)
    with CaptureQueriesContext(connection) as queries:
        purged = retention.records_purge(days=30, now=NOW, batch_size=2)
    assert purged == 6 + 6
    assert sorted(Cdr.objects.values_list("pkid", flat=True)) == ["new-0", "new-1", "new-undated"]
    assert sorted(Cmr.objects.values_list("pkid", flat=True)) == ["new-0", "new-1"]
    # Six old rows of each kind, two per batch: three DELETEs each, never one big one.
    assert delete_count(queries, "cdr_cdr") == 3
    assert delete_count(queries, "cdr_cmr") == 3


def test_zero_days_keeps_everything(records: None, settings: Any) -> None:
    settings.CDR_RETENTION_DAYS = 0
    settings.DELIVERY_LOG_RETENTION_DAYS = 0
    make_delivery(Webhook.objects.create(name="w", url="http://x/"), "succeeded", OLD, OLD)
    assert retention.retention_purge(now=NOW) == {"deliveries": 0, "records": 0, "calls": 0}
    assert (Cdr.objects.count(), Cmr.objects.count(), Delivery.objects.count()) == (9, 8, 1)


def test_it_purges_finished_deliveries_with_their_attempts_and_keeps_work_in_progress() -> None:
    webhook = Webhook.objects.create(name="w", url="http://x/")
    for status in ("succeeded", "failed", "skipped"):
        make_delivery(webhook, status, OLD, OLD)
        make_delivery(webhook, status, NEW, OLD)  # created long ago, finished recently
    make_delivery(webhook, "skipped", None, OLD)  # finished before finished_at was kept
    pending = make_delivery(webhook, "pending", None, OLD)
    sending = make_delivery(webhook, "sending", None, OLD)
    assert (Delivery.objects.count(), DeliveryAttempt.objects.count()) == (9, 9)

    assert retention.deliveries_purge(days=30, now=NOW, batch_size=2) == 4
    assert Delivery.objects.count() == 5
    assert not Delivery.objects.filter(finished_at__lt=NOW - timedelta(days=30)).exists()
    assert set(Delivery.objects.filter(status__in=["pending", "sending"])) == {pending, sending}
    assert DeliveryAttempt.objects.count() == 5


def test_the_beat_task_applies_both_settings_and_a_kept_delivery_outlives_its_cdr(
    settings: Any,
) -> None:
    settings.CDR_RETENTION_DAYS = 30
    settings.DELIVERY_LOG_RETENTION_DAYS = 90
    webhook = Webhook.objects.create(name="w", url="http://x/")
    old_cdr = make_cdr("old", OLD)
    make_cdr("new", NEW)
    delivery = make_delivery(webhook, "succeeded", OLD, OLD, cdr=old_cdr)

    assert retention_purge() == {"deliveries": 0, "records": 1, "calls": 0}
    assert list(Cdr.objects.values_list("pkid", flat=True)) == ["new"]
    delivery.refresh_from_db()
    assert (delivery.cdr_id, delivery.body, delivery.attempts.count()) == (None, "{}", 1)


def test_the_purge_runs_hourly_from_beat(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["retention-purge"]
    assert entry == {"task": "calltelemetry.tasks.retention_purge", "schedule": 3600.0}
    assert retention_purge.name == entry["task"]


@pytest.mark.parametrize("name", ["CDR_RETENTION_DAYS", "DELIVERY_LOG_RETENTION_DAYS"])
def test_a_bad_retention_setting_stops_start_up_naming_it(name: str) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, name: "-1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert name in result.stderr


def test_calls_nothing_joined_for_the_retention_period_go_with_their_keys() -> None:
    from cdr.models import Call, CallKey

    def call(at: datetime) -> Call:
        made = Call.objects.create(cluster="c", first_arrival_at=at, last_arrival_at=at)
        CallKey.objects.create(cluster="c", kind=CallKey.GLOBAL, number=made.pk, call=made)
        return made

    call(OLD)
    new = call(NEW)
    assert retention.calls_purge(days=30, now=NOW, batch_size=1) == 1
    assert list(Call.objects.all()) == [new]
    assert list(CallKey.objects.values_list("call_id", flat=True)) == [new.pk]
    assert retention.calls_purge(days=0, now=NOW + timedelta(days=999)) == 0  # 0 keeps all
    assert Call.objects.count() == 1
