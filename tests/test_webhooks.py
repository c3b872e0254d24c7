from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from calltelemetry.caching import caches_clear
from cdr.fields import header
from cdr.models import Cdr
from cdr.services import cdr_file_ingest
from licensing.selectors import license_cache_clear
from webhooks.delivery import deliveries_attempt, generate_secret, secret_problem
from webhooks.lifecycle import deliveries_sweep
from webhooks.models import Condition, Delivery, DeliveryAttempt, Header, Webhook
from webhooks.services import delivery_redeliver, webhook_test_send
from webhooks.tasks import deliver_many

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "cdr-events-webhooks.txt"


def reference_payload() -> dict[str, Any]:
    text = SEED.read_text()
    return json.loads(text[text.index('{\n"cdr"') : text.rindex("}") + 1])


def reference_row() -> dict[str, str]:
    """The CDR as CUCM wrote it, rebuilt from the product page's example payload."""
    values = {}
    for name, value in reference_payload()["cdr"].items():
        if name.startswith("dateTime"):
            value = "0" if value == "Never" else str(int(datetime.fromisoformat(value).timestamp()))
        values[name] = str(value)
    return values


def write_cdr_file(path: Path, rows: list[dict[str, str]], count: int = 129) -> Path:
    from cdr.fields import CDR_FIELDS

    names = header("cdr", count)
    lines = [",".join(f'"{n}"' for n in names), ",".join(f.type for f in CDR_FIELDS[:count])]
    for values in rows:
        cells = []
        for spec in CDR_FIELDS[:count]:
            value = values.get(spec.name, "")
            cells.append(value if spec.is_integer else '"' + value.replace('"', '""') + '"')
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_webhook(
    url: str, conditions: list[tuple[str, str, object]] = (), **fields: Any
) -> Webhook:
    webhook = Webhook.objects.create(
        name=fields.pop("name", "Caller ID Webhook"), url=url, **fields
    )
    for order, (field, operator, value) in enumerate(conditions):
        Condition.objects.create(
            webhook=webhook, field=field, operator=operator, value=value, order=order
        )
    return webhook


def ingest(path: Path) -> Any:
    return cdr_file_ingest(path=path, source="replay")


@pytest.fixture
def local(settings: Any) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 1.0
    settings.WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0)


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("premium", "local")]


def attempt_one(delivery_id: int) -> DeliveryAttempt | None:
    """What a worker does with one due delivery: its attempt, None when nothing was sent."""
    return deliveries_attempt(ids=[delivery_id]).get(delivery_id)


def only_delivery() -> Delivery:
    return Delivery.objects.get()


def test_the_received_payload_is_exactly_the_product_page_example(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")
    make_webhook(
        httpserver.url_for("/hook"),
        [("dateTimeConnect", "eq", "Never"), ("finalCalledPartyNumber", "eq", "1000")],
        meta={"event": "missed call"},
    )
    ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [reference_row()]))
    deliveries_attempt(ids=[only_delivery().pk])
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.get_data()) == reference_payload()
    assert only_delivery().status == Delivery.Status.SUCCEEDED


def test_the_synthetic_test_event_is_the_example_too(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok")
    webhook = make_webhook(httpserver.url_for("/hook"), meta={"event": "missed call"})
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200 and attempt.trigger == "test"
    assert json.loads(httpserver.log[0][0].get_data()) == reference_payload()
    assert Delivery.objects.get().kind == Delivery.Kind.TEST


def test_match_moves_statistics_and_creates_one_delivery_per_record(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    long_call = {
        **reference_row(),
        "pkid": "long",
        "duration": "400",
        "dateTimeConnect": "1699282642",
    }
    short_call = {
        **reference_row(),
        "pkid": "short",
        "duration": "20",
        "dateTimeConnect": "1699282642",
    }
    over_five = make_webhook(httpserver.url_for("/a"), [("duration", "gt", 300)], name="Long")
    every = make_webhook(httpserver.url_for("/b"), name="Every")
    make_webhook(httpserver.url_for("/c"), name="Off", enabled=False)
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [long_call, short_call]))
    over_five.refresh_from_db()
    every.refresh_from_db()
    assert (over_five.hit_count, every.hit_count) == (1, 2)
    assert over_five.last_hit_at is not None
    assert Delivery.objects.filter(webhook=over_five).get().cdr.pkid == "long"
    assert Delivery.objects.count() == 3


def test_reingesting_records_fires_nothing(tmp_path: Path, httpserver: HTTPServer) -> None:
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    again = ingest(
        write_cdr_file(
            tmp_path / "cdr_C_01_202311061458_2",
            [reference_row(), {**reference_row(), "pkid": "new"}],
        )
    )
    webhook.refresh_from_db()
    assert (again.stored_count, again.duplicate_count) == (1, 1)
    assert webhook.hit_count == 2 and Delivery.objects.count() == 2


def test_cmr_records_are_not_matched(samples: Path, httpserver: HTTPServer) -> None:
    make_webhook(httpserver.url_for("/hook"))
    ingest(samples / "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1")
    assert Delivery.objects.count() == 0


def test_headers_and_signature_verify_as_a_receiver_would(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok")
    secret = generate_secret()
    webhook = make_webhook(httpserver.url_for("/hook"), secret=secret)
    Header.objects.create(webhook=webhook, name="Authorization", value="Bearer s3cr3t")
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    delivery = only_delivery()
    deliveries_attempt(ids=[delivery.pk])
    request: Request = httpserver.log[0][0]
    assert request.headers["Authorization"] == "Bearer s3cr3t"
    assert request.headers["User-Agent"].startswith("CallTelemetry-Webhooks/")
    assert request.headers["webhook-id"] == delivery.event_id
    timestamp = request.headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    # Standard Webhooks reference verification.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{request.headers['webhook-id']}.{timestamp}.".encode() + request.get_data()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in request.headers["webhook-signature"].split(" ")
    logged = delivery.attempts.get().request_headers
    assert logged["Authorization"] == "••••••" and "s3cr3t" not in json.dumps(logged)
    assert logged["webhook-signature"] == "v1,••••••"


def test_it_retries_on_500_then_succeeds_with_every_attempt_logged(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_ordered_request("/hook").respond_with_data("boom", status=500)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok", status=200)
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    delivery = only_delivery()
    before = timezone.now()
    deliveries_attempt(ids=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RETRYING
    assert (
        before + timedelta(seconds=3.9) <= delivery.next_attempt_at <= before + timedelta(seconds=7)
    )
    assert attempt_one(delivery.pk) is None  # not due yet
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    deliveries_attempt(ids=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SUCCEEDED
    attempts = list(
        delivery.attempts.values_list("number", "status_code", "error_class", "response_body")
    )
    assert attempts == [(1, 500, "http", "boom"), (2, 200, "", "ok")]
    ids = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert ids == {delivery.event_id}
    webhook.refresh_from_db()
    assert (webhook.delivered_count, webhook.failed_count, webhook.last_status) == (1, 0, "200")


def test_after_the_last_scheduled_attempt_the_delivery_fails(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    delivery = only_delivery()
    for _ in range(3):  # first try + the two retries of the test schedule
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        deliveries_attempt(ids=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED and delivery.attempt_count == 3
    webhook.refresh_from_db()
    assert (webhook.failed_count, webhook.last_status) == (1, "503")


def test_404_is_not_retried(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("no", status=404)
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    deliveries_attempt(ids=[only_delivery().pk])
    delivery = only_delivery()
    assert delivery.status == Delivery.Status.FAILED and delivery.next_attempt_at is None
    assert delivery.reason == "HTTP 404 NOT FOUND"


def test_429_honours_retry_after(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"}
    )
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    before = timezone.now()
    deliveries_attempt(ids=[only_delivery().pk])
    delivery = only_delivery()
    assert delivery.status == Delivery.Status.RETRYING
    assert delivery.next_attempt_at >= before + timedelta(seconds=120)


def test_a_timeout_is_recorded_and_retried(tmp_path: Path, httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("late")

    httpserver.expect_request("/hook").respond_with_handler(slow)
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    attempt = attempt_one(only_delivery().pk)
    assert attempt.error_class == "timeout" and attempt.status_code is None
    assert only_delivery().status == Delivery.Status.RETRYING
    time.sleep(0.6)  # let the slow handler finish before the server is reused


def test_a_redirect_is_not_followed(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": "/elsewhere"}
    )
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    deliveries_attempt(ids=[only_delivery().pk])
    assert [request.path for request, _ in httpserver.log] == ["/hook"]
    assert only_delivery().status == Delivery.Status.FAILED


def test_a_dead_receiver_is_a_connect_error_and_retried(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_webhook(f"http://127.0.0.1:{port}/hook")
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    attempt = attempt_one(only_delivery().pk)
    assert attempt.error_class == "connect"
    assert only_delivery().status == Delivery.Status.RETRYING


def test_dns_failure_is_classified(tmp_path: Path) -> None:
    make_webhook("http://no-such-host.invalid/hook")
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    assert attempt_one(only_delivery().pk).error_class == "dns"


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("http://127.0.0.1:{port}/hook", "", True),
        ("http://localhost:{port}/hook", "", True),  # a name that resolves to loopback
        ("http://127.0.0.1:{port}/hook", "127.0.0.0/8", False),
        ("http://169.254.169.254/latest/meta-data", "0.0.0.0/0", True),
        ("http://[::ffff:169.254.169.254]/", "0.0.0.0/0", True),
        ("http://0.0.0.0:{port}/", "", True),
        ("http://224.0.0.1/", "", True),
    ],
)
def test_destination_policy(
    tmp_path: Path, httpserver: HTTPServer, settings: Any, url: str, allowed: str, refused: bool
) -> None:
    from calltelemetry.config import networks

    settings.WEBHOOK_ALLOWED_NETWORKS = networks(allowed)
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(url.format(port=httpserver.port))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    attempt = attempt_one(only_delivery().pk)
    if refused:
        assert attempt.error_class == "policy"
        assert only_delivery().status == Delivery.Status.FAILED  # never retried
        assert httpserver.log == []
    else:
        assert attempt.status_code == 200


def test_without_a_license_matches_count_but_nothing_is_sent(
    tmp_path: Path, httpserver: HTTPServer, settings: Any
) -> None:
    settings.LICENSE_PUBLIC_KEYS = {"other": base64.b64encode(b"\x01" * 32).decode()}
    license_cache_clear()
    webhook = make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    webhook.refresh_from_db()
    delivery = only_delivery()
    assert webhook.hit_count == 1
    assert (delivery.status, delivery.reason) == (Delivery.Status.SKIPPED, "license")
    assert attempt_one(delivery.pk) is None
    assert httpserver.log == []


def test_a_license_that_lapses_between_match_and_send_skips_the_send(
    tmp_path: Path, httpserver: HTTPServer, settings: Any
) -> None:
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    assert only_delivery().status == Delivery.Status.PENDING
    settings.LICENSE_PUBLIC_KEYS = {"other": base64.b64encode(b"\x01" * 32).decode()}
    license_cache_clear()
    assert attempt_one(only_delivery().pk) is None
    delivery = only_delivery()
    assert delivery.status == Delivery.Status.SKIPPED and delivery.reason.startswith("license")
    assert httpserver.log == []


def test_redeliver_sends_again_with_the_same_webhook_id(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    deliveries_attempt(ids=[only_delivery().pk])
    delivery = delivery_redeliver(delivery=only_delivery())
    assert delivery.status == Delivery.Status.PENDING
    deliveries_attempt(ids=[delivery.pk])
    assert [r.headers["webhook-id"] for r, _ in httpserver.log] == [delivery.event_id] * 2
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2]


def test_the_sweeper_reclaims_a_delivery_whose_worker_died(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    past = timezone.now() - timedelta(minutes=5)
    Delivery.objects.update(status=Delivery.Status.SENDING, claimed_until=past, attempt_count=1)
    sent: list[list[int]] = []
    original = deliver_many.delay
    deliver_many.delay = sent.append  # type: ignore[method-assign]
    try:
        assert deliveries_sweep() == 1
    finally:
        deliver_many.delay = original  # type: ignore[method-assign]
    assert sent == [[only_delivery().pk]]
    assert only_delivery().status == Delivery.Status.PENDING


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_" + base64.b64encode(b"k" * 32).decode(), None),
        ("k" * 40, "starts with whsec_"),
        ("whsec_###", "base64"),
        ("whsec_" + base64.b64encode(b"k" * 8).decode(), "24 to 64 bytes"),
    ],
)
def test_secret_format(secret: str, problem: str | None) -> None:
    found = secret_problem(secret)
    assert found is None if problem is None else problem in found
    assert secret_problem(generate_secret()) is None


def test_cdr_of_a_delivery_is_kept(tmp_path: Path, httpserver: HTTPServer) -> None:
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    assert only_delivery().cdr == Cdr.objects.get()
    assert datetime.fromtimestamp(1699282642, tz=UTC) == Cdr.objects.get().origination_at


def test_the_body_is_rendered_at_the_first_send_and_kept_for_retries(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=503)
    webhook = make_webhook(httpserver.url_for("/hook"), meta={"v": 1})
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    assert only_delivery().body == ""  # matching stores no body
    deliveries_attempt(ids=[only_delivery().pk])
    first = only_delivery().body
    assert json.loads(first)["meta"] == {"v": 1}
    Webhook.objects.filter(pk=webhook.pk).update(meta={"v": 2})
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok")
    Delivery.objects.update(next_attempt_at=timezone.now())
    caches_clear()  # the worker sees the edit
    deliveries_attempt(ids=[only_delivery().pk])
    assert [r.get_data(as_text=True) for r, _ in httpserver.log] == [first, first]
    assert only_delivery().status == Delivery.Status.SUCCEEDED


def test_a_record_deleted_before_the_first_send_fails_the_delivery_with_a_reason(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    make_webhook(httpserver.url_for("/hook"))
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    Cdr.objects.all().delete()
    assert attempt_one(only_delivery().pk) is None
    delivery = only_delivery()
    assert delivery.status == Delivery.Status.FAILED
    assert "deleted" in delivery.reason and not httpserver.log


def test_an_edit_between_two_batches_applies_to_the_next_batch(
    tmp_path: Path, httpserver: HTTPServer, settings: Any
) -> None:
    from webhooks.services import webhook_set_enabled
    from webhooks.validation import webhook_save

    settings.CDR_BATCH_SIZE = 1
    call = {**reference_row(), "duration": "20", "dateTimeConnect": "1699282642"}
    webhook = make_webhook(httpserver.url_for("/hook"), [("duration", "gt", 300)])
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [{**call, "pkid": "a"}]))
    assert Delivery.objects.count() == 0
    webhook_save(
        webhook=webhook, name=webhook.name, url=webhook.url, enabled=True, meta={},
        conditions=[{"field": "duration", "operator": "gt", "value": 10}],
        headers=None, secret=None,
    )  # fmt: skip
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061458_2", [{**call, "pkid": "b"}]))
    assert list(Delivery.objects.values_list("cdr__pkid", flat=True)) == ["b"]
    webhook_set_enabled(webhook=webhook, enabled=False)
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061459_3", [{**call, "pkid": "c"}]))
    assert Delivery.objects.count() == 1
