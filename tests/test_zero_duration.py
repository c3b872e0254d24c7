"""The warning that CUCM's "CDR Log Calls with Zero Duration Flag" looks off (issue 13 §4)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from calltelemetry import health
from calltelemetry.caching import caches_clear
from calltelemetry.health import beat_heartbeat, watcher_heartbeat
from cdr.models import CdrFile
from cdr.services import cdr_file_ingest
from tests.calls_fixtures import leg
from tests.test_health_metrics import scrape
from tests.test_webhooks import write_cdr_file

pytestmark = pytest.mark.django_db

PARAMETER = "CDR Log Calls with Zero Duration Flag"


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path
    beat_heartbeat()
    watcher_heartbeat()
    return tmp_path


def send(tmp_path: Path, cluster: str, connected: int, never: int = 0, first: int = 0) -> CdrFile:
    """One CDR file from `cluster`: `connected` answered legs and `never` never-connected."""
    rows = [leg(first + n, "1000", "2000", "2000", connected=True) for n in range(connected)]
    rows += [
        leg(first + connected + n, "1000", "2000", "2000", connected=False) for n in range(never)
    ]
    for row in rows:
        row["globalCallId_ClusterID"] = cluster
    path = write_cdr_file(tmp_path / f"cdr_{cluster}_01_202611300900_{first}", rows)
    return cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)


def warnings(client: Client) -> tuple[list[str], str, float | None]:
    """What /healthz, the admin index and /metrics say, read afresh."""
    caches_clear()
    health = client.get("/healthz")
    assert health.status_code == 200, health.json()
    assert health.json()["status"] == "ok"
    index = client.get("/admin/").content.decode()
    gauge = scrape(client).get("calltelemetry_cdr_zero_duration_missing", {})
    value = gauge.get(("calltelemetry_cdr_zero_duration_missing", (("cluster", "East"),)))
    return health.json()["warnings"], index, value


def test_200_cdrs_without_a_never_connected_call_warn_everywhere(
    admin_client: Client, data_dir: Path, tmp_path: Path
) -> None:
    send(tmp_path, "East", connected=150)
    send(tmp_path, "East", connected=50, first=150)  # counted over every file of the day
    health, index, metric = warnings(admin_client)
    assert len(health) == 1
    assert "East" in health[0] and f'"{PARAMETER}" to True' in health[0]
    assert 'id="zero-duration-warning"' in index and PARAMETER in index and "East" in index
    assert metric == 1


def test_199_cdrs_are_too_few_to_tell(admin_client: Client, data_dir: Path, tmp_path: Path) -> None:
    send(tmp_path, "East", connected=199)
    health, index, metric = warnings(admin_client)
    assert health == []
    assert 'id="zero-duration-warning"' not in index and PARAMETER not in index
    assert metric == 0


def test_one_never_connected_call_is_enough(
    admin_client: Client, data_dir: Path, tmp_path: Path
) -> None:
    send(tmp_path, "East", connected=299, never=1)
    health, index, metric = warnings(admin_client)
    assert health == [] and PARAMETER not in index
    assert metric == 0


def test_only_the_last_24_hours_count_and_clusters_are_judged_apart(
    admin_client: Client, data_dir: Path, tmp_path: Path
) -> None:
    old = send(tmp_path, "East", connected=150, never=1)
    CdrFile.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    send(tmp_path, "East", connected=200, first=151)
    send(tmp_path, "West", connected=300, never=2, first=400)
    health, _, metric = warnings(admin_client)
    assert metric == 1
    assert len(health) == 1 and "cluster East" in health[0]
    gauge = scrape(admin_client)["calltelemetry_cdr_zero_duration_missing"]
    assert gauge[("calltelemetry_cdr_zero_duration_missing", (("cluster", "West"),))] == 0


def test_the_answer_is_kept_for_a_few_minutes(
    admin_client: Client, data_dir: Path, tmp_path: Path
) -> None:
    send(tmp_path, "East", connected=200)
    assert len(warnings(admin_client)[0]) == 1
    send(tmp_path, "East", connected=0, never=1, first=200)
    # Cached: the scrape, health check and admin index do not query the records every time.
    assert len(admin_client.get("/healthz").json()["warnings"]) == 1
    assert warnings(admin_client)[0] == []


def test_a_warning_check_that_fails_is_a_warning_not_an_error(
    client: Client, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database not migrated yet answers SELECT 1 but has no record tables.
    def unmigrated() -> list[str]:
        raise RuntimeError("no such table: cdr_cdrfile")

    monkeypatch.setattr(health, "_warnings", [unmigrated])
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["warnings"] == [
        "a check could not run (test_a_warning_check_that_fails_is_a_warning_not_an_error"
        ".<locals>.unmigrated): no such table: cdr_cdrfile"
    ]
