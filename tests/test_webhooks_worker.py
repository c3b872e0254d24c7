"""End to end through real processes: a Celery worker on the real broker (Redis in CI)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cdr.services import cdr_file_ingest
from tests.conftest import broker_unreachable
from tests.test_dropfolder import wait_for
from tests.test_webhooks import make_webhook, reference_payload, reference_row, write_cdr_file
from webhooks.lifecycle import deliveries_sweep
from webhooks.models import Delivery, DeliveryAttempt, Webhook

pytestmark = pytest.mark.slow


def test_a_dropped_file_reaches_the_receiver_through_the_worker(
    process_env: dict[str, str],
    start_worker: Callable,
    httpserver: HTTPServer,
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.CDR_SETTLE_SECONDS = 0.01
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(
        httpserver.url_for("/hook"),
        [("dateTimeConnect", "eq", "Never")],
        meta={"event": "missed call"},
    )
    start_worker()
    incoming = Path(process_env["CDR_INCOMING_DIR"])
    write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [reference_row()])
    os.rename(
        tmp_path / "cdr_StandAloneCluster_01_202311061457_1",
        incoming / "cdr_StandAloneCluster_01_202311061457_1",
    )
    time.sleep(0.05)
    call_command("watch_cdr", "--once")
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).exists())
    ((request, _),) = httpserver.log
    assert json.loads(request.get_data()) == reference_payload()
    webhook = Webhook.objects.get()
    assert (webhook.hit_count, webhook.delivered_count) == (1, 1)


def test_a_broker_outage_delays_but_never_loses_a_delivery(
    process_env: dict[str, str], start_worker: Callable, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(httpserver.url_for("/hook"))
    with broker_unreachable():
        cdr_file_ingest(
            path=write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]),
            source="replay",
        )
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.PENDING and httpserver.log == []
    start_worker()
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert deliveries_sweep() == 1
    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.SUCCEEDED)
    assert len(httpserver.log) == 1


def test_a_worker_killed_mid_delivery_still_delivers_exactly_one_success(
    process_env: dict[str, str], start_worker: Callable, httpserver: HTTPServer, tmp_path: Path
) -> None:
    arrived = threading.Event()
    calls: list[str] = []

    def receiver(request: Request) -> Response:
        calls.append(request.headers["webhook-id"])
        if len(calls) == 1:
            arrived.set()
            time.sleep(3)  # the worker dies while waiting for this answer
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(receiver)
    make_webhook(httpserver.url_for("/hook"))
    worker = start_worker(pool="solo")
    cdr_file_ingest(
        path=write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]),
        source="replay",
    )
    assert arrived.wait(30), "".join(worker.output[-30:])
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.SENDING
    # The lease would run out on its own after WEBHOOK_TIMEOUT×2+30 s; skip the wait.
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    start_worker()
    deliveries_sweep()
    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.SUCCEEDED)
    time.sleep(0.5)
    delivery = Delivery.objects.get()
    assert calls == [delivery.event_id, delivery.event_id]
    assert delivery.attempts.filter(status_code=200).count() == 1
    assert Webhook.objects.get().delivered_count == 1


def test_a_worker_killed_mid_batch_still_delivers_each_exactly_once(
    process_env: dict[str, str], start_worker: Callable, tmp_path: Path
) -> None:
    # A receiver that answers concurrently: the whole batch is in flight when the worker dies.
    receiver = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    receiver.start()
    calls: list[str] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            calls.append(request.headers["webhook-id"])
            first = calls.count(request.headers["webhook-id"]) == 1
        if first:
            time.sleep(3)  # the worker dies while waiting for these answers
        return Response("ok")

    receiver.expect_request("/hook").respond_with_handler(handler)
    try:
        make_webhook(receiver.url_for("/hook"))
        worker = start_worker(pool="solo")
        rows = [{**reference_row(), "pkid": f"kill-{n}"} for n in range(5)]
        cdr_file_ingest(
            path=write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", rows), source="replay"
        )
        wait_for(lambda: len(calls) == 5, 30)
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENDING}
        Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
        start_worker()
        deliveries_sweep()
        wait_for(lambda: Delivery.objects.filter(status="succeeded").count() == 5, 30)
        time.sleep(0.5)
        event_ids = set(Delivery.objects.values_list("event_id", flat=True))
        assert sorted(calls) == sorted([*event_ids, *event_ids])  # each sent twice, no more
        assert DeliveryAttempt.objects.filter(status_code=200).count() == 5
        assert set(Delivery.objects.values_list("attempt_count", flat=True)) == {2}
        assert Webhook.objects.get().delivered_count == 5
    finally:
        receiver.clear()
        receiver.stop()
