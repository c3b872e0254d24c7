"""Deliveries in batches: one claim, concurrent sends, one write of the outcomes per batch.

Real receivers on 127.0.0.1 (pytest-httpserver, and a small threaded HTTP/1.1 server that
keeps connections alive — werkzeug's closes each one), the real database (SQLite here,
PostgreSQL in CI).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from pytest_httpserver import HTTPServer

from tests.test_webhooks import ingest, make_webhook, reference_row, write_cdr_file
from webhooks import delivery as delivery_module
from webhooks import http
from webhooks.delivery import deliveries_attempt, deliveries_send
from webhooks.lifecycle import BATCH_MAX, deliveries_claim, deliveries_enqueue
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.tasks import deliver_many


@pytest.fixture
def local(settings: Any) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 1.0
    settings.WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0)


@dataclass
class Received:
    path: str
    event_id: str
    port: int
    at: float


class KeepAliveReceiver(ThreadingHTTPServer):
    """Answers concurrently, keeps connections alive, notes each request and the client port
    it came from. `routes` maps a path to (status, seconds to wait before answering)."""

    daemon_threads = True
    request_queue_size = 128  # many connections open at once

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, float]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAliveReceiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.received.append(
                Received(
                    self.path, self.headers["webhook-id"], self.client_address[1], time.monotonic()
                )
            )
        status, wait = self.server.routes.get(self.path, (404, 0.0))
        time.sleep(wait)
        try:
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:  # the client gave up waiting
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[KeepAliveReceiver]:
    server = KeepAliveReceiver()
    yield server
    server.shutdown()
    server.server_close()
    http.pools_close()


pytestmark = [pytest.mark.usefixtures("premium", "local")]


def records(tmp_path: Path, count: int) -> Path:
    rows = [{**reference_row(), "pkid": f"batch-{n}"} for n in range(count)]
    return write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", rows)


def ids_of(webhook: Webhook) -> list[int]:
    return list(
        Delivery.objects.filter(webhook=webhook).order_by("id").values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_a_batch_with_mixed_outcomes_records_one_attempt_each(
    tmp_path: Path, httpserver: HTTPServer, receiver: KeepAliveReceiver
) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/boom").respond_with_data("down", status=500)
    receiver.routes["/missing"] = (404, 0.0)
    ok = make_webhook(httpserver.url_for("/ok"), name="ok")
    boom = make_webhook(httpserver.url_for("/boom"), name="boom")
    missing = make_webhook(receiver.url_for("/missing"), name="missing")
    refused = make_webhook("http://169.254.169.254/latest", name="refused")
    ingest(records(tmp_path, 5))
    ids = list(Delivery.objects.order_by("?").values_list("pk", flat=True))
    assert len(ids) == 20 <= BATCH_MAX

    results = deliveries_attempt(ids=ids)

    assert set(results) == set(ids) and all(a is not None for a in results.values())
    assert DeliveryAttempt.objects.count() == 20
    assert set(DeliveryAttempt.objects.values_list("number", "trigger")) == {(1, "scheduled")}
    expected = {
        ok: ("succeeded", 200, "", (5, 0, "200")),
        boom: ("retrying", 500, "http", (0, 0, "500")),
        missing: ("failed", 404, "http", (0, 5, "404")),
        refused: ("failed", None, "policy", (0, 5, "policy")),
    }
    for webhook, (status, code, error_class, counters) in expected.items():
        deliveries = Delivery.objects.filter(webhook=webhook)
        assert {d.status for d in deliveries} == {status}, webhook.name
        assert {d.attempt_count for d in deliveries} == {1}
        assert {
            (a.status_code, a.error_class)
            for a in DeliveryAttempt.objects.filter(delivery__webhook=webhook)
        } == {(code, error_class)}
        assert all(d.body and d.claimed_until is None for d in deliveries)
        webhook.refresh_from_db()
        assert (webhook.delivered_count, webhook.failed_count, webhook.last_status) == counters
    assert all(d.next_attempt_at > d.created_at for d in Delivery.objects.filter(webhook=boom))
    assert {d.reason for d in Delivery.objects.filter(webhook=missing)} == {"HTTP 404 Not Found"}
    assert all(d.finished_at for d in Delivery.objects.exclude(webhook=boom))
    sent = [r.headers["webhook-id"] for r, _ in httpserver.log]
    sent += [r.event_id for r in receiver.received]
    assert Counter(sent) == Counter(
        Delivery.objects.exclude(webhook=refused).values_list("event_id", flat=True)
    )


@pytest.mark.django_db
def test_a_batch_costs_the_same_statements_whatever_its_size(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    webhook = make_webhook(httpserver.url_for("/ok"))
    ingest(records(tmp_path, BATCH_MAX + 2))
    ids = ids_of(webhook)
    deliveries_attempt(ids=ids[:2])  # warm: webhook snapshot, license, layout, connection
    with CaptureQueriesContext(connection) as small:
        deliveries_attempt(ids=ids[2:4])
    with CaptureQueriesContext(connection) as full:
        deliveries_attempt(ids=ids[4:])
    assert len(ids[4:]) == BATCH_MAX - 2
    assert len(full) == len(small) <= 8, [q["sql"][:60] for q in full]
    assert Delivery.objects.filter(status="succeeded").count() == BATCH_MAX + 2


@pytest.mark.django_db(transaction=True)
def test_claims_racing_over_the_same_ids_win_each_delivery_once(
    tmp_path: Path, receiver: KeepAliveReceiver
) -> None:
    receiver.routes["/hook"] = (200, 0.0)
    webhook = make_webhook(receiver.url_for("/hook"))
    ingest(records(tmp_path, 60))
    ids = ids_of(webhook)
    start = threading.Barrier(3)
    won: list[list[int]] = [[], [], []]

    def worker(slot: int) -> None:
        try:
            order = ids if slot % 2 == 0 else ids[::-1]
            start.wait()
            for at in range(0, len(order), 10):
                won[slot] += deliveries_attempt(ids=order[at : at + 10])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(w for slot in won for w in slot) == ids  # each won by exactly one claim
    assert sum(1 for slot in won if slot) >= 2, "the claims did not overlap"
    assert Counter(r.event_id for r in receiver.received) == Counter(
        Delivery.objects.values_list("event_id", flat=True)
    ), list(DeliveryAttempt.objects.values_list("error_class", "error"))
    assert DeliveryAttempt.objects.count() == 60
    assert Webhook.objects.get().delivered_count == 60


@pytest.mark.django_db
def test_deliveries_claim_takes_only_due_pending_ones(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 4))
    a, b, c, d = ids_of(webhook)
    from django.utils import timezone

    Delivery.objects.filter(pk=b).update(next_attempt_at=timezone.now() + timezone.timedelta(1))
    Delivery.objects.filter(pk=c).update(status="succeeded")
    claimed = deliveries_claim(ids=[a, b, c, d, 10_000])
    assert [x.pk for x in claimed] == [a, d]
    assert all(x.status == "sending" and x.attempt_count == 1 for x in claimed)
    assert deliveries_claim(ids=[a, d]) == []  # already taken


@pytest.mark.django_db
def test_connections_are_kept_alive_across_deliveries_and_batches(
    tmp_path: Path, receiver: KeepAliveReceiver
) -> None:
    receiver.routes["/hook"] = (200, 0.0)
    webhook = make_webhook(receiver.url_for("/hook"))
    ingest(records(tmp_path, 60))
    ids = ids_of(webhook)
    for at in range(0, len(ids), 10):
        deliveries_attempt(ids=ids[at : at + 10])
    ports = [r.port for r in receiver.received]
    assert len(ports) == 60
    assert Delivery.objects.filter(status="succeeded").count() == 60
    # At most one connection per concurrent send of a batch, reused by the next batches.
    assert len(set(ports)) <= 10, Counter(ports)


@pytest.mark.django_db
def test_a_slow_receiver_does_not_hold_up_the_rest_of_the_batch(
    tmp_path: Path, receiver: KeepAliveReceiver
) -> None:
    receiver.routes["/slow"] = (200, 2.5)  # beyond WEBHOOK_TIMEOUT (1 s)
    receiver.routes["/fast"] = (200, 0.0)
    slow_hook = make_webhook(receiver.url_for("/slow"), name="slow")
    fast_hook = make_webhook(receiver.url_for("/fast"), name="fast")
    ingest(records(tmp_path, 6))  # 6 deliveries to each
    ids = list(Delivery.objects.order_by("webhook_id", "id").values_list("pk", flat=True))
    assert Delivery.objects.filter(pk=ids[0], webhook=slow_hook).exists()  # slow ones first

    started = time.monotonic()
    deliveries_attempt(ids=ids)
    elapsed = time.monotonic() - started

    arrived = {r.event_id: r.at for r in receiver.received}
    fast_ids = set(Delivery.objects.filter(webhook=fast_hook).values_list("event_id", flat=True))
    assert fast_ids <= set(arrived)
    assert max(arrived[e] for e in fast_ids) - started < 0.8  # not queued behind the slow ones
    assert elapsed < 1.0 + 0.8  # one timeout for the whole batch, not one per slow delivery
    slow_attempts = DeliveryAttempt.objects.filter(delivery__webhook=slow_hook)
    assert {a.error_class for a in slow_attempts} == {"timeout"} and len(slow_attempts) == 6
    assert set(Delivery.objects.filter(webhook=slow_hook).values_list("status", flat=True)) == {
        "retrying"
    }
    assert Delivery.objects.filter(webhook=fast_hook, status="succeeded").count() == 6


@pytest.mark.django_db
def test_enqueue_sends_one_task_per_batch(tmp_path: Path) -> None:
    sent: list[list[int]] = []
    original = deliver_many.delay
    deliver_many.delay = sent.append  # type: ignore[method-assign]
    try:
        deliveries_enqueue(range(1, 2 * BATCH_MAX + 3))
    finally:
        deliver_many.delay = original  # type: ignore[method-assign]
    assert [len(batch) for batch in sent] == [BATCH_MAX, BATCH_MAX, 2]
    assert [x for batch in sent for x in batch] == list(range(1, 2 * BATCH_MAX + 3))


@pytest.mark.django_db
def test_a_webhook_edit_reaches_the_batch_within_the_cache_time(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpserver.expect_request("/old").respond_with_data("old")
    httpserver.expect_request("/new").respond_with_data("new")
    webhook = make_webhook(httpserver.url_for("/old"))
    ingest(records(tmp_path, 2))
    first, second = ids_of(webhook)
    monkeypatch.setattr(delivery_module, "WEBHOOK_CACHE_SECONDS", 0.2)
    deliveries_attempt(ids=[first])
    Webhook.objects.filter(pk=webhook.pk).update(url=httpserver.url_for("/new"))
    time.sleep(0.3)
    deliveries_attempt(ids=[second])
    assert [r.path for r, _ in httpserver.log] == ["/old", "/new"]


@pytest.mark.django_db
def test_a_webhook_deleted_after_the_claim_does_not_stop_the_batch(
    tmp_path: Path, receiver: KeepAliveReceiver
) -> None:
    receiver.routes["/hook"] = (200, 0.0)
    kept = make_webhook(receiver.url_for("/hook"), name="kept")
    gone = make_webhook(receiver.url_for("/hook"), name="gone")
    ingest(records(tmp_path, 3))
    claimed = deliveries_claim(ids=list(Delivery.objects.values_list("pk", flat=True)))
    assert len(claimed) == 6
    gone.delete()
    results = deliveries_send(deliveries=claimed, trigger="scheduled")
    assert sorted(a is not None for a in results.values()) == [False] * 3 + [True] * 3
    assert set(Delivery.objects.values_list("webhook_id", "status")) == {(kept.pk, "succeeded")}
    assert len(receiver.received) == 3


@pytest.mark.django_db
def test_a_response_with_a_nul_byte_is_recorded(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data(b"a\x00b", status=500)
    make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 1))
    deliveries_attempt(ids=list(Delivery.objects.values_list("pk", flat=True)))
    assert DeliveryAttempt.objects.get().response_body == "a\ufffdb"
    assert Delivery.objects.get().status == "retrying"


def test_new_destinations_past_the_pool_bound_leave_a_busy_destinations_connection_open(
    receiver: KeepAliveReceiver,
) -> None:
    receiver.routes["/hook"] = (200, 0.0)
    port = receiver.server_address[1]
    for n in range(2, 204):  # more destinations than pools kept; nothing listens on them
        if n % 100 == 2:  # the busy one is used every now and then
            assert http.post(receiver.url_for("/hook"), body=b"{}", headers={}).status_code == 200
        refused = http.post(f"http://127.0.0.{n}:{port}/hook", body=b"{}", headers={})
        assert refused.status_code is None
    assert http.post(receiver.url_for("/hook"), body=b"{}", headers={}).status_code == 200
    assert len({r.port for r in receiver.received}) == 1  # one kept-alive connection


def test_a_renderer_forgotten_between_loading_and_sending_is_loaded_again(
    tmp_path: Path,
) -> None:
    from calltelemetry.caching import caches_clear
    from cdr.models import Cdr
    from webhooks.payload import stored_cdrs

    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    (record,) = stored_cdrs(Cdr.objects.values_list("pk", flat=True)).values()
    caches_clear()
    assert record.cdr()["pkid"] == reference_row()["pkid"]
