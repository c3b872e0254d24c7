"""Scale-out: two Celery worker processes draining one queue against one database and one
broker (PostgreSQL and Redis in CI) process every file and every delivery exactly once."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cdr.generator import generate
from cdr.models import Cdr, CdrFile
from cdr.services import cdr_file_ingest
from tests.test_dropfolder import wait_for
from tests.test_webhooks import make_webhook
from webhooks.models import Delivery, DeliveryAttempt, Webhook

pytestmark = pytest.mark.slow

RECORDS = 300


def lines_of(workers: list[Any], text: str) -> list[int]:
    """How many output lines of each worker contain `text`."""
    return [sum(text in line for line in worker.output) for worker in workers]


def test_two_workers_deliver_every_record_exactly_once(
    process_env: dict[str, str], start_worker: Callable, httpserver: HTTPServer, tmp_path: Path
) -> None:
    received: list[str] = []
    lock = threading.Lock()

    def receiver(request: Request) -> Response:
        with lock:
            received.append(request.headers["webhook-id"])
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(receiver)
    make_webhook(httpserver.url_for("/hook"))  # no conditions: every CDR matches
    workers = [start_worker(queues="webhooks"), start_worker(queues="webhooks")]
    (path,) = generate(tmp_path, records=RECORDS, seed=6)

    cdr_file_ingest(path=path, source="replay")

    deliveries = Delivery.objects.count()
    assert deliveries == Cdr.objects.count() == RECORDS
    wait_for(lambda: Delivery.objects.filter(status="succeeded").count() == deliveries, 30)
    time.sleep(0.5)  # a duplicate send would arrive now
    assert Counter(received) == Counter(Delivery.objects.values_list("event_id", flat=True))
    assert max(Counter(received).values()) == 1
    assert DeliveryAttempt.objects.count() == deliveries
    assert Webhook.objects.get().delivered_count == deliveries
    # Both processes took part: the queue was shared, not drained by one.
    done = lines_of(workers, ": 200 succeeded")
    assert sum(done) == deliveries and min(done) > 0, done


def test_files_queued_by_the_watcher_are_ingested_once_across_two_workers(
    process_env: dict[str, str], start_worker: Callable, settings: Any, tmp_path: Path
) -> None:
    settings.CDR_SETTLE_SECONDS = 0.01
    incoming = Path(process_env["CDR_INCOMING_DIR"])
    workers = [start_worker(queues="ingest"), start_worker(queues="ingest")]
    paths = generate(tmp_path, records=RECORDS, seed=7, records_per_file=50)
    assert len(paths) == 6
    for path in paths:
        os.rename(path, incoming / path.name)
    time.sleep(0.05)

    call_command("watch_cdr", "--once")

    wait_for(lambda: CdrFile.objects.filter(status="done").count() == len(paths), 30)
    files = CdrFile.objects.all()
    assert sorted(f.name for f in files) == sorted(p.name for p in paths)
    assert sum(f.stored_count for f in files) == Cdr.objects.count() == RECORDS
    assert sum(f.duplicate_count + f.rejected_count for f in files) == 0
    assert all(f.attempts == 1 for f in files)
    for path in paths:
        assert sum(lines_of(workers, f"ingested {path.name}: done")) == 1
    assert min(lines_of(workers, "ingested ")) > 0
