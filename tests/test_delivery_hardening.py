"""Delivery hardening (issue 11): a receiver that drips its answer, a record that cannot be
rendered, counters after redelivery, control characters in names and log lines, and regular
expressions that would backtrack for ever.

Real receivers on 127.0.0.1 (a raw socket server that answers one byte at a time, the
keep-alive receiver of test_webhooks_batch, pytest-httpserver), the real database, and a
real Celery worker for the slow receiver's neighbour.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from logging.config import DictConfigurator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from calltelemetry.logs import JsonFormatter, PlainFormatter
from cdr.models import Cdr
from tests.test_webhooks import ingest, make_webhook, reference_row, write_cdr_file
from tests.test_webhooks_admin import add
from tests.test_webhooks_api import create
from tests.test_webhooks_batch import KeepAliveReceiver
from webhooks import http, lifecycle
from webhooks.delivery import deliveries_attempt
from webhooks.lifecycle import deliveries_claim, deliveries_sweep
from webhooks.matching import ConditionError, Rule, compile_rules, validate_condition
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.payload import cdr_renderer, render_time
from webhooks.tasks import deliver_many

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class DripReceiver:
    """Reads a request, then answers it one byte every `interval` seconds: never silent for
    as long as a socket timeout, and never done within one."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.connections = 0
        self.requests = 0
        self.server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/drip"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            self.requests += 1
            for byte in ANSWER:
                if self.closed.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up: what we want
                    return

    def close(self) -> None:
        self.closed.set()
        self.server.close()


@pytest.fixture
def drip() -> Iterator[DripReceiver]:
    receiver = DripReceiver()
    yield receiver
    receiver.close()
    http.pools_close()


@pytest.fixture
def local(settings: Any) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 2.0
    settings.WEBHOOK_RETRY_SCHEDULE = (60.0, 300.0)


def records(tmp_path: Path, count: int, **fields: str) -> Path:
    rows = [
        {**reference_row(), "pkid": f"hard-{time.monotonic_ns()}-{n}", **fields}
        for n in range(count)
    ]
    return write_cdr_file(tmp_path / f"cdr_C_01_202311061457_{time.monotonic_ns()}", rows)


# --- 1. a slow receiver ----------------------------------------------------------------------


@pytest.mark.usefixtures("local")
def test_a_receiver_that_drips_its_answer_times_out_at_the_deadline(drip: DripReceiver) -> None:
    started = time.monotonic()
    response = http.post(drip.url, body=b"{}", headers={})
    elapsed = time.monotonic() - started
    assert response.error_class == "timeout" and response.status_code is None
    assert response.error == "no complete response within 2 s"
    assert 1.9 < elapsed < 2.6
    assert 1900 < response.latency_ms < 2600
    # The cut connection is not reused: the next attempt opens its own, and times out too.
    assert http.post(drip.url, body=b"{}", headers={}).error_class == "timeout"
    assert drip.connections == 2


@pytest.mark.usefixtures("local")
def test_the_deadline_leaves_a_prompt_answer_and_its_kept_alive_connection_alone(
    receiver: KeepAliveReceiver,
) -> None:
    receiver.routes["/fast"] = (200, 0.0)
    for _ in range(3):
        assert http.post(receiver.url_for("/fast"), body=b"{}", headers={}).status_code == 200
    time.sleep(2.2)  # past the first attempts' deadlines: nothing shuts the kept connection
    assert http.post(receiver.url_for("/fast"), body=b"{}", headers={}).status_code == 200
    assert len({r.port for r in receiver.received}) == 1


@pytest.fixture
def receiver() -> Iterator[KeepAliveReceiver]:
    server = KeepAliveReceiver()
    yield server
    server.shutdown()
    server.server_close()
    http.pools_close()


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_a_webhook_whose_receiver_is_slow_gets_no_new_claims_while_one_is_being_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = make_webhook("http://127.0.0.1:9/slow", name="slow")
    fast = make_webhook("http://127.0.0.1:9/fast", name="fast")
    ingest(records(tmp_path, 3))
    slow_ids = list(
        Delivery.objects.filter(webhook=slow).order_by("pk").values_list("pk", flat=True)
    )
    fast_ids = list(
        Delivery.objects.filter(webhook=fast).order_by("pk").values_list("pk", flat=True)
    )
    started = timezone.now()
    assert [d.pk for d in deliveries_claim(ids=slow_ids[:1], now=started)] == slow_ids[:1]

    # Being sent for less than half the timeout: nothing known against the receiver.
    soon = started + timedelta(seconds=0.5)
    assert [d.pk for d in deliveries_claim(ids=slow_ids[1:2], now=soon)] == slow_ids[1:2]
    # Being sent for longer: its webhook's deliveries stay due, the others are claimed.
    later = started + timedelta(seconds=1.5)
    claimed = deliveries_claim(ids=[slow_ids[2], *fast_ids[:2]], now=later)
    assert [d.pk for d in claimed] == fast_ids[:2]
    assert Delivery.objects.get(pk=slow_ids[2]).status == "pending"

    # Nor does the sweeper queue them ahead of everyone else's.
    queued: list[list[int]] = []
    monkeypatch.setattr(deliver_many, "delay", queued.append)
    Delivery.objects.filter(pk__in=[slow_ids[2], fast_ids[2]]).update(claimed_until=None)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert deliveries_sweep() == 1
    assert queued == [[fast_ids[2]]]


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_after_a_timeout_a_webhook_has_one_batch_in_flight_at_most(tmp_path: Path) -> None:
    slow = make_webhook("http://127.0.0.1:9/slow", name="slow")
    ingest(records(tmp_path, 3))
    ids = list(Delivery.objects.filter(webhook=slow).order_by("pk").values_list("pk", flat=True))
    Webhook.objects.filter(pk=slow.pk).update(last_status="timeout")
    now = timezone.now()
    assert len(deliveries_claim(ids=ids[:2], now=now)) == 2
    assert deliveries_claim(ids=ids[2:], now=now) == []
    # Once nothing of it is being sent, it gets the next batch; a test send is never held.
    assert lifecycle.delivery_claim(delivery_id=ids[2], now=now) is not None


@pytest.mark.usefixtures("local")
def test_a_batch_lasts_at_most_one_timeout_and_the_lease_outlives_the_task(settings: Any) -> None:
    from webhooks.tasks import deliver_many

    settings.WEBHOOK_TIMEOUT = 15.0
    soft, hard = deliver_many.soft_time_limit, deliver_many.time_limit
    assert settings.WEBHOOK_TIMEOUT < soft < hard < lifecycle.lease().total_seconds()
    assert lifecycle.slow_seconds() < settings.WEBHOOK_TIMEOUT


@pytest.mark.slow
def test_a_dripping_receiver_does_not_stop_a_healthy_webhook_through_the_worker(
    process_env: dict[str, str],
    start_worker: Callable,
    drip: DripReceiver,
    receiver: KeepAliveReceiver,
    settings: Any,
    tmp_path: Path,
) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    process_env["WEBHOOK_TIMEOUT"] = "2"
    process_env["WEBHOOK_RETRY_SCHEDULE"] = "60,300"
    receiver.routes["/healthy"] = (200, 0.0)
    make_webhook(drip.url, [("callingPartyNumber", "eq", "666")], name="drip")
    healthy = make_webhook(receiver.url_for("/healthy"), [("callingPartyNumber", "eq", "1")])
    # A backlog of the slow receiver's deliveries, queued first: four full batches.
    ingest(records(tmp_path, 100, callingPartyNumber="666"))
    start_worker(queues="webhooks", concurrency=2)

    committed: dict[str, float] = {}
    started = time.monotonic()
    while time.monotonic() - started < 7:
        ingest(records(tmp_path, 1, callingPartyNumber="1"))
        (event_id,) = (
            Delivery.objects.filter(webhook=healthy)
            .exclude(event_id__in=committed)
            .values_list("event_id", flat=True)
        )
        committed[event_id] = time.monotonic()
        time.sleep(0.4)
    deadline = time.monotonic() + 10
    while len(receiver.received) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.1)

    arrived = {r.event_id: r.at for r in receiver.received}
    assert set(arrived) == set(committed)
    latencies = sorted(arrived[e] - committed[e] for e in committed)
    # At worst the first ones wait for one timeout (both processes took a slow batch before
    # the receiver was known to be slow); from then on, one process is left for the others.
    assert latencies[-1] < 2 + 1.5, latencies
    assert statistics.median(latencies) < 1.0, latencies
    cut = DeliveryAttempt.objects.filter(delivery__webhook__name="drip")
    assert cut.exists() and set(cut.values_list("error_class", flat=True)) == {"timeout"}
    assert all(1900 < a.latency_ms < 3000 for a in cut)


# --- 2. a record that cannot be rendered ----------------------------------------------------


def test_a_time_outside_the_calendar_is_rendered_as_written() -> None:
    assert render_time("-99999999999") == "-99999999999"
    assert render_time("99999999999999") == "99999999999999"
    assert render_time("-1") == "1969-12-31T23:59:59Z"
    render = cdr_renderer(["pkid", "dateTimeOrigination", "duration", "callingPartyNumber"])
    assert render(["p", "-99999999999", "x1"]) == {
        "pkid": "p",
        "dateTimeOrigination": "-99999999999",
        "duration": "x1",
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_a_record_that_cannot_be_rendered_fails_alone_and_its_batch_is_sent(
    tmp_path: Path, httpserver: HTTPServer, api: Any
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 6))
    first, second, *_ = Cdr.objects.order_by("pk")
    # Stored before ingest refused such values: a time no calendar has, and a broken line.
    negative = records(tmp_path, 1, dateTimeOrigination="-99999999999").read_text()
    Cdr.objects.filter(pk=first.pk).update(raw=negative.splitlines()[2])
    Cdr.objects.filter(pk=second.pk).update(raw='"unterminated')

    deliveries_attempt(ids=list(Delivery.objects.values_list("pk", flat=True)))

    broken = Delivery.objects.get(cdr=second)
    assert broken.status == "failed"
    assert broken.reason.startswith("render: the stored record cannot be rendered (Error: ")
    assert broken.finished_at is not None and broken.claimed_until is None
    assert Delivery.objects.filter(status="succeeded").count() == 5
    bodies = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert len(bodies) == 5
    assert [b["cdr"]["dateTimeOrigination"] for b in bodies].count("-99999999999") == 1
    webhook.refresh_from_db()
    assert (webhook.delivered_count, webhook.failed_count) == (5, 1)
    # Its page still shows, with the reason and no body.
    shown = api.get(f"/api/v1/deliveries/{broken.pk}/").json()
    assert shown["reason"] == broken.reason and shown["body"] == ""


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_a_delivery_whose_record_was_deleted_fails_and_counts_as_failed(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 3))
    gone = Cdr.objects.order_by("pk").first()
    gone_delivery = Delivery.objects.get(cdr=gone)
    gone.delete()  # retention purged it before the first send

    deliveries_attempt(ids=list(Delivery.objects.values_list("pk", flat=True)))

    gone_delivery.refresh_from_db()
    assert gone_delivery.status == "failed"
    assert gone_delivery.reason == "the record was deleted before it could be sent"
    assert len(httpserver.log) == 2
    webhook.refresh_from_db()
    assert (webhook.delivered_count, webhook.failed_count) == (2, 1)


# --- 3. counters after a redelivery ---------------------------------------------------------


class Answers:
    """A receiver whose answers are set by the test: the next status for every request."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.status = 200
        httpserver.expect_request("/hook").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        return Response("answer", status=self.status)


def counters(webhook: Webhook) -> tuple[int, int]:
    webhook.refresh_from_db()
    return webhook.delivered_count, webhook.failed_count


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_a_failed_delivery_that_succeeds_on_redelivery_counts_as_delivered_only(
    tmp_path: Path, httpserver: HTTPServer, staff_api: Any
) -> None:
    answers = Answers(httpserver)
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 1))
    delivery = Delivery.objects.get()
    answers.status = 404
    deliveries_attempt(ids=[delivery.pk])
    assert counters(webhook) == (0, 1)

    answers.status = 200
    response = staff_api.post(f"/api/v1/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 202
    assert counters(webhook) == (0, 0)  # pending again: neither
    deliveries_attempt(ids=[delivery.pk])
    assert counters(webhook) == (1, 0)

    # And the other way round.
    answers.status = 404
    assert staff_api.post(f"/api/v1/deliveries/{delivery.pk}/redeliver/").status_code == 202
    deliveries_attempt(ids=[delivery.pk])
    assert counters(webhook) == (0, 1)


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_a_bulk_redelivery_moves_the_counters_with_the_deliveries(
    tmp_path: Path, httpserver: HTTPServer, staff_api: Any
) -> None:
    answers = Answers(httpserver)
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(records(tmp_path, 3))
    ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
    deliveries_attempt(ids=[ids[0]])
    answers.status = 404
    deliveries_attempt(ids=ids[1:])
    assert counters(webhook) == (1, 2)

    answers.status = 200
    response = staff_api.post(
        "/api/v1/deliveries/redeliver/",
        {"webhook": webhook.pk, "status": ["failed", "succeeded"]},
        format="json",
    )
    assert response.status_code == 202 and response.json() == {"requeued": 3}
    assert counters(webhook) == (0, 0)
    deliveries_attempt(ids=ids)
    assert counters(webhook) == (3, 0)
    assert Delivery.objects.filter(status="succeeded").count() == 3


# --- 4. control characters in names and log lines -------------------------------------------


FORGED = "Sales\n2026-12-01 10:00:00,000 INFO webhooks.delivery delivery 1 forged"


@pytest.mark.django_db
@pytest.mark.parametrize("name", [FORGED, "Sales\rforged", "Sales\x1b[2Jforged", "Sales\u2028x"])
def test_a_webhook_name_with_a_control_character_is_refused_by_the_api(
    staff_api: Any, premium: str, name: str
) -> None:
    response = create(staff_api, name=name)
    assert response.status_code == 400
    assert "control characters or line breaks" in response.json()["name"][0]
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_a_webhook_name_with_a_line_break_is_refused_by_the_admin(
    admin_client: Client, premium: str
) -> None:
    response = add(admin_client, name=FORGED)
    assert "control characters or line breaks" in response.content.decode()
    assert not Webhook.objects.exists()
    webhook = make_webhook("https://crm.example.com/hook", name="Sales")
    data = {"name": "Sales\nforged", "url": webhook.url, "meta": "{}", "enabled": "on"}
    data |= {
        f"{p}-{k}": "0" for p in ("conditions", "headers") for k in ("TOTAL_FORMS", "INITIAL_FORMS")
    }
    page = admin_client.post(reverse("admin:webhooks_webhook_change", args=[webhook.pk]), data)
    assert "control characters or line breaks" in page.content.decode()
    assert Webhook.objects.get().name == "Sales"


def log_record(*args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "webhooks.delivery", logging.INFO, __file__, 1, "attempt to webhook %s: %s", args, None
    )


def test_the_plain_log_format_escapes_line_breaks_in_a_message() -> None:
    formatter = PlainFormatter("%(levelname)s %(name)s %(message)s")
    line = formatter.format(log_record(FORGED, "a\r\nb\x1b\u2028"))
    assert line.splitlines() == [line]
    assert line == (
        "INFO webhooks.delivery attempt to webhook Sales\\n2026-12-01 10:00:00,000 INFO "
        "webhooks.delivery delivery 1 forged: a\\r\\nb\\x1b\\u2028"
    )


def test_the_configured_plain_format_is_the_escaping_one(settings: Any) -> None:
    plain = settings.LOGGING["formatters"]["plain"]
    formatter = DictConfigurator(settings.LOGGING).configure_formatter(dict(plain))
    assert isinstance(formatter, PlainFormatter)
    assert "\n" not in formatter.format(log_record(FORGED, "x"))


def test_the_json_log_format_keeps_a_forged_name_on_its_line() -> None:
    line = JsonFormatter().format(log_record(FORGED, "a\r\nb"))
    assert line.splitlines() == [line]
    assert json.loads(line)["message"] == f"attempt to webhook {FORGED}: a\r\nb"


# --- 5. regular expressions ----------------------------------------------------------------


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"^(a|aa)+$", r"(a|a)*b", r"^(\w+\s?)*$"])
def test_a_catastrophic_pattern_matches_in_linear_time(pattern: str) -> None:
    rule = validate_condition("callingPartyNumber", "regex", pattern)
    match = compile_rules([rule], {"callingPartyNumber": 0})
    started = time.monotonic()
    assert not match(["a" * 25 + "!"])  # Python's re: 2**25 paths to try
    assert match(["a" * 20_000]) == (pattern != r"(a|a)*b")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(\d)\1", r"invalid escape sequence: \1 (back-references are not supported)"),
        (r"^(?=1)", "invalid perl operator: (?= (look-around and back-references"),
        (r"(?<!0)1", "invalid perl operator: (?<! (look-around"),
        (r"a{1001}", "invalid repetition size: {1001}"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_naming_the_construct(
    pattern: str, message: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        validate_condition("callingPartyNumber", "regex", pattern)
    assert caught.value.errors["value"].startswith("invalid regular expression: ")
    assert message in caught.value.errors["value"]


def test_a_pattern_stored_before_re2_matches_nothing_instead_of_failing() -> None:
    match = compile_rules(
        [Rule("callingPartyNumber", "regex", r"(\d)\1")], {"callingPartyNumber": 0}
    )
    assert not match(["11"])
