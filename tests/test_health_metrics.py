from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from calltelemetry.health import (
    beat_heartbeat,
    heartbeat_age,
    heartbeat_path,
    watcher_heartbeat,
    watcher_heartbeat_age,
    watcher_heartbeat_path,
)
from cdr.models import CdrFile
from cdr.services import cdr_file_ingest
from tests.test_parsing import EXPECTED
from tests.test_webhooks import make_webhook
from webhooks.models import Delivery, DeliveryAttempt, Header, Webhook
from webhooks.tasks import sweep


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path
    return tmp_path


# --- /healthz --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_is_200_with_fresh_heartbeats(data_dir: Path, client: Client) -> None:
    beat_heartbeat()
    watcher_heartbeat()
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "beat": True,
        "watcher": True,
    }


@pytest.mark.django_db
def test_healthz_is_503_when_the_heartbeat_is_stale(data_dir: Path, client: Client) -> None:
    beat_heartbeat()
    watcher_heartbeat()
    old = time.time() - 45
    os.utime(heartbeat_path(), (old, old))
    response = client.get("/healthz")
    assert response.status_code == 503
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is False and "45 s ago" in beat["detail"]


@pytest.mark.django_db
def test_healthz_is_503_before_the_sweeper_ever_ran(data_dir: Path, client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "never run" in response.json()["checks"]["beat"]["detail"]


@pytest.mark.django_db
def test_healthz_is_503_when_the_watcher_made_no_progress(data_dir: Path, client: Client) -> None:
    beat_heartbeat()
    watcher_heartbeat()
    old = time.time() - 90
    os.utime(watcher_heartbeat_path(), (old, old))
    response = client.get("/healthz")
    assert response.status_code == 503
    watcher = response.json()["checks"]["watcher"]
    assert watcher["ok"] is False
    assert "watcher last completed a scan 90 s ago (stale after 60 s)" in watcher["detail"]


@pytest.mark.django_db
def test_healthz_is_503_before_the_watcher_ever_scanned(data_dir: Path, client: Client) -> None:
    beat_heartbeat()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "watcher has never completed a scan" in response.json()["checks"]["watcher"]["detail"]


@pytest.mark.django_db
def test_a_deployment_without_a_watcher_skips_its_check(
    data_dir: Path, client: Client, settings: Any
) -> None:
    settings.WATCHER_STALE_SECONDS = 0
    beat_heartbeat()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert "not checked" in response.json()["checks"]["watcher"]["detail"]


@pytest.mark.django_db
def test_a_watcher_round_touches_its_heartbeat(data_dir: Path, settings: Any) -> None:
    settings.CDR_INCOMING_DIR = data_dir / "incoming"
    assert watcher_heartbeat_age() is None
    call_command("watch_cdr", "--once")
    age = watcher_heartbeat_age()
    assert age is not None and age < 5
    assert watcher_heartbeat_path() == data_dir / "watcher-heartbeat"


@pytest.mark.django_db
def test_the_sweep_task_beats(data_dir: Path) -> None:
    assert heartbeat_age() is None
    sweep()
    age = heartbeat_age()
    assert age is not None and age < 5
    assert heartbeat_path() == data_dir / "beat-heartbeat"


# --- /metrics --------------------------------------------------------------------------------


def scrape(client: Client) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples
        }
    return families


@pytest.fixture
def activity(db: None, data_dir: Path, samples: Path) -> Webhook:
    for relative in EXPECTED:
        cdr_file_ingest(path=samples / relative, source="replay", evaluate_webhooks=False)
    webhook = make_webhook(
        "https://crm.example.com/hook?token=url-secret",
        name="Missed calls",
        secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
    )
    Header.objects.create(webhook=webhook, name="Authorization", value="Bearer header-secret")
    Webhook.objects.filter(pk=webhook.pk).update(hit_count=7, delivered_count=5, failed_count=1)
    now = timezone.now()

    def delivery(n: int, status: str, due: timedelta | None = None) -> Delivery:
        return Delivery.objects.create(
            webhook=webhook,
            event_id=f"msg_{n}",
            body="{}",
            status=status,
            next_attempt_at=None if due is None else now + due,
        )

    delivery(1, Delivery.Status.PENDING, timedelta(seconds=-90))
    delivery(2, Delivery.Status.PENDING, timedelta(seconds=-10))
    delivery(3, Delivery.Status.PENDING, timedelta(minutes=5))
    delivery(4, Delivery.Status.SUCCEEDED)
    failed = delivery(5, Delivery.Status.FAILED)
    for number, (latency, age) in enumerate(
        [(3.0, timedelta(0)), (40.0, timedelta(hours=1)), (700.0, timedelta(hours=23)),
         (20.0, timedelta(hours=25))],
        start=1,
    ):  # fmt: skip
        DeliveryAttempt.objects.create(
            delivery=failed,
            number=number,
            started_at=now - age,
            url=webhook.url,
            latency_ms=latency,
        )
    return webhook


def test_metrics_are_read_from_the_database(activity: Webhook, client: Client) -> None:
    families = scrape(client)
    records = families["calltelemetry_records_ingested"]
    assert records == {
        ("calltelemetry_records_ingested_total", (("kind", "cdr"),)): 24.0,
        ("calltelemetry_records_ingested_total", (("kind", "cmr"),)): 17.0,
    }
    files = families["calltelemetry_ingest_files"]
    assert files[("calltelemetry_ingest_files", (("status", "done"),))] == 10.0
    assert files[("calltelemetry_ingest_files", (("status", "failed"),))] == 0.0

    hook = (("webhook", "Missed calls"), ("webhook_id", str(activity.pk)))
    assert families["calltelemetry_webhook_matches"] == {
        ("calltelemetry_webhook_matches_total", hook): 7.0
    }
    assert families["calltelemetry_webhook_delivered"] == {
        ("calltelemetry_webhook_delivered_total", hook): 5.0
    }
    assert families["calltelemetry_webhook_failed"] == {
        ("calltelemetry_webhook_failed_total", hook): 1.0
    }

    deliveries = {
        dict(labels)["status"]: value
        for (_, labels), value in families["calltelemetry_deliveries"].items()
    }
    assert deliveries == {
        "pending": 3.0,
        "sending": 0.0,
        "succeeded": 1.0,
        "failed": 1.0,
        "skipped": 0.0,
        "retrying": 0.0,
        "held": 0.0,
    }
    assert families["calltelemetry_deliveries_due"] == {("calltelemetry_deliveries_due", ()): 2.0}
    oldest = families["calltelemetry_oldest_due_delivery_age_seconds"]
    assert 89 <= oldest[("calltelemetry_oldest_due_delivery_age_seconds", ())] <= 100


def test_latency_histogram_covers_the_last_24_hours(activity: Webhook, client: Client) -> None:
    histogram = scrape(client)["calltelemetry_delivery_attempt_latency_seconds"]
    name = "calltelemetry_delivery_attempt_latency_seconds"
    bucket = {
        dict(labels)["le"]: value
        for (n, labels), value in histogram.items()
        if n.endswith("_bucket")
    }
    assert (bucket["0.005"], bucket["0.025"], bucket["0.05"], bucket["0.5"], bucket["1.0"]) == (
        1.0,
        1.0,
        2.0,
        2.0,
        3.0,
    )
    assert bucket["+Inf"] == 3.0
    assert histogram[(f"{name}_count", ())] == 3.0
    assert histogram[(f"{name}_sum", ())] == pytest.approx(0.743)


def test_ingest_lag_per_cluster(activity: Webhook, client: Client) -> None:
    clusters = set(CdrFile.objects.exclude(cluster="").values_list("cluster", flat=True))
    assert clusters
    CdrFile.objects.update(created_at=timezone.now() - timedelta(seconds=120))
    lag = scrape(client)["calltelemetry_last_file_age_seconds"]
    ages = {dict(labels)["cluster"]: value for (_, labels), value in lag.items()}
    assert set(ages) == clusters
    assert all(120 <= age < 130 for age in ages.values())


def test_metrics_leak_no_secret_and_need_no_login_from_loopback(
    activity: Webhook, client: Client
) -> None:
    text = client.get("/metrics").content.decode()
    for secret in ("url-secret", "header-secret", activity.secret, "crm.example.com"):
        assert secret not in text


@pytest.mark.django_db
def test_metrics_on_an_empty_appliance(data_dir: Path, client: Client) -> None:
    families = scrape(client)
    assert families["calltelemetry_deliveries_due"] == {("calltelemetry_deliveries_due", ()): 0.0}
    assert families["calltelemetry_oldest_due_delivery_age_seconds"] == {
        ("calltelemetry_oldest_due_delivery_age_seconds", ()): 0.0
    }
    assert families["calltelemetry_webhook_matches"] == {}
    beat = families["calltelemetry_beat_heartbeat_age_seconds"]
    assert str(beat[("calltelemetry_beat_heartbeat_age_seconds", ())]) == "nan"
    watcher = families["calltelemetry_watcher_heartbeat_age_seconds"]
    assert str(watcher[("calltelemetry_watcher_heartbeat_age_seconds", ())]) == "nan"
