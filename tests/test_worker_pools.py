"""Ingest cannot starve delivery: `make run`'s worker pools, with real workers and PostgreSQL."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from pytest_httpserver import HTTPServer

from calltelemetry.supervisor import WORKER_POOLS
from cdr.dropfolder import Folders
from cdr.models import CdrFile
from cdr.services import cdr_file_create, cdr_file_ingest
from cdr.tasks import ingest_file
from tests.conftest import test_database_url as database_url
from tests.test_dropfolder import wait_for
from tests.test_webhooks import make_webhook, reference_row, write_cdr_file
from webhooks.models import Delivery

SAMPLES = (
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630",
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260558_476631",
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260936_476745",
)


def ingests_waiting_on_the_lock(conn: Any) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database() AND query ILIKE 'UPDATE %cdr_cdrfile%'"
    ).fetchone()
    return row[0]


@pytest.mark.slow
def test_a_delivery_is_made_while_ingests_hold_every_ingest_process(
    samples: Path,
    process_env: dict[str, str],
    start_worker: Callable,
    httpserver: HTTPServer,
    tmp_path: Path,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("holds ingests on a row lock, which needs PostgreSQL")
    import psycopg

    for queues, concurrency in WORKER_POOLS.values():
        start_worker(queues=queues, concurrency=concurrency)
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(httpserver.url_for("/hook"))
    folders = Folders.current()
    files = []
    for relative in SAMPLES:
        path = folders.queue / Path(relative).name
        shutil.copy(samples / relative, path)
        files.append(cdr_file_create(name=path.name, source="watcher", path=path))
    # Each ingest starts by claiming its record: while another transaction holds the rows,
    # every ingest process sits in that UPDATE, as it would on a long or hostile file.
    with (
        psycopg.connect(database_url()) as locker,
        psycopg.connect(database_url()) as probe,
    ):
        probe.autocommit = True
        ids = [f.pk for f in files]
        locker.execute("SELECT id FROM cdr_cdrfile WHERE id = ANY(%s) FOR UPDATE", [ids])
        for cdr_file in files:
            ingest_file.delay(cdr_file.pk)
        wait_for(lambda: ingests_waiting_on_the_lock(probe) >= 1, 30)
        time.sleep(1)  # time for any other free process to take an ingest too
        busy = ingests_waiting_on_the_lock(probe)

        cdr_file_ingest(
            path=write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]),
            source="replay",
        )
        wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).exists(), 15)
        assert len(httpserver.log) == 1
        assert ingests_waiting_on_the_lock(probe) == busy >= 1
        locker.rollback()
    wait_for(
        lambda: (
            set(CdrFile.objects.filter(pk__in=ids).values_list("status", flat=True))
            == {CdrFile.Status.DONE}
        ),
        30,
    )


def test_ingest_tasks_have_a_time_limit(settings: Any) -> None:
    assert ingest_file.soft_time_limit == settings.CDR_INGEST_TIME_LIMIT == 1800
    assert ingest_file.time_limit == settings.CDR_INGEST_TIME_LIMIT + 60
