"""H-state (issue 14): retrying, a failing webhook's run of failures, pause after
WEBHOOK_PAUSE_AFTER with one alert e-mail, resume in order, disable → held → enable or
drop, and a rate limit shared by every worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from werkzeug import Request, Response

from tests.test_dropfolder import wait_for
from tests.test_webhooks import ingest, make_webhook, reference_row, write_cdr_file
from webhooks.delivery import deliveries_attempt
from webhooks.lifecycle import DROPPED, deliveries_sweep
from webhooks.models import Delivery, DeliveryAttempt, Webhook


def records(tmp_path: Path, count: int, name: str = "cdr_C_01_202311061457_1") -> Path:
    rows = [{**reference_row(), "pkid": f"{name}-{n}"} for n in range(count)]
    return write_cdr_file(tmp_path / name, rows)


@pytest.fixture
def local(settings: Any) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 1.0
    settings.WEBHOOK_RETRY_SCHEDULE = (0.05,) * 20


class Receiver:
    """A receiver on 127.0.0.1 that answers `status` and notes each webhook-id it got."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.status = 503
        self.received: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        httpserver.expect_request("/hook").respond_with_handler(self.handle)
        self.url = httpserver.url_for("/hook")

    def handle(self, request: Request) -> Response:
        with self.lock:
            if self.status < 300:
                self.received.append((time.monotonic(), request.headers["webhook-id"]))
        return Response("ok" if self.status < 300 else "down", status=self.status)


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)


def open_ids(webhook: Webhook) -> list[int]:
    return list(
        Delivery.objects.filter(webhook=webhook, status__in=["pending", "retrying"])
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def shown(client: APIClient, webhook: Webhook) -> dict[str, Any]:
    response = client.get("/api/v1/webhooks/")
    assert response.status_code == 200
    (body,) = [w for w in response.json()["results"] if w["id"] == webhook.pk]
    return body


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Callable) -> Iterator[Callable]:
    """Run a worker's step and what it leaves for after its commit (the alert e-mail)."""

    def run(step: Callable[[], Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return step()

    yield run


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_retrying_shows_why_and_when_and_the_list_counts_failures_as_they_happen(
    tmp_path: Path, receiver: Receiver, staff_api: APIClient
) -> None:
    webhook = make_webhook(receiver.url)
    ingest(records(tmp_path, 1))
    delivery = Delivery.objects.get()
    for attempt in (1, 2):
        wait_for(lambda: bool(open_ids(webhook)) and deliveries_attempt(ids=open_ids(webhook)))
        delivery.refresh_from_db()
        assert delivery.status == "retrying" and delivery.attempt_count == attempt
        assert delivery.reason == "the receiver answered HTTP 503 SERVICE UNAVAILABLE"
        assert delivery.next_attempt_at is not None
        listed = shown(staff_api, webhook)
        assert listed["consecutive_failures"] == attempt
        assert listed["failing_since"] is not None
        assert listed["state"] == "active" and listed["pending_count"] == 1
    body = staff_api.get(f"/api/v1/deliveries/{delivery.pk}/").json()
    assert body["status"] == "retrying" and body["reason"].startswith("the receiver answered")
    assert body["next_attempt_at"] is not None

    receiver.status = 200
    wait_for(lambda: bool(deliveries_attempt(ids=open_ids(webhook))))
    listed = shown(staff_api, webhook)
    assert (listed["consecutive_failures"], listed["failing_since"]) == (0, None)
    assert listed["pending_count"] == 0 and listed["delivered_count"] == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_uninterrupted_failure_pauses_holds_alerts_once_and_resume_sends_in_order(
    tmp_path: Path,
    receiver: Receiver,
    staff_api: APIClient,
    settings: Any,
    run_on_commit: Callable,
) -> None:
    settings.WEBHOOK_PAUSE_AFTER = 1.0
    settings.ALERT_EMAILS = ("noc@example.com",)
    # Within its rate limit (600 a minute): one send per 0.1 s, the oldest first.
    webhook = make_webhook(receiver.url, rate_limit_per_minute=600)
    ingest(records(tmp_path, 3))
    started = time.monotonic()

    def failing_until_paused() -> bool:
        run_on_commit(lambda: deliveries_attempt(ids=open_ids(webhook)))
        webhook.refresh_from_db()
        return webhook.paused_at is not None

    wait_for(failing_until_paused, 15)
    assert time.monotonic() - started >= 1.0
    assert webhook.state == "paused" and webhook.consecutive_failures >= 3
    assert webhook.paused_reason.startswith("paused after ")
    assert "HTTP 503" in webhook.paused_reason
    assert set(Delivery.objects.values_list("status", flat=True)) == {"held"}
    assert len(mail.outbox) == 1
    (alert,) = mail.outbox
    assert alert.to == ["noc@example.com"] and webhook.name in alert.subject
    assert "held" in alert.body and "/resume/" in alert.body

    # While paused: nothing is claimed, a new match waits held, and no second e-mail goes.
    ingest(records(tmp_path, 1, name="cdr_C_01_202311061458_2"))
    new = Delivery.objects.get(status="pending")
    assert run_on_commit(lambda: deliveries_attempt(ids=[new.pk])) == {}
    deliveries_sweep()
    assert Delivery.objects.get(pk=new.pk).status == "held"
    listed = shown(staff_api, webhook)
    assert listed["state"] == "paused" and listed["paused_at"] is not None
    assert listed["pending_count"] == 4 and listed["expected_drain_at"] is None
    assert len(mail.outbox) == 1

    receiver.status = 200
    response = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/resume/")
    assert response.status_code == 200, response.content
    assert response.json()["released"] == 4
    assert response.json()["webhook"]["state"] == "active"
    assert response.json()["webhook"]["expected_drain_at"] is not None
    wanted = list(Delivery.objects.order_by("pk").values_list("event_id", flat=True))
    wait_for(lambda: not run_on_commit(lambda: deliveries_attempt(ids=open_ids(webhook)))
             and not open_ids(webhook), 15)  # fmt: skip
    assert [event_id for _, event_id in receiver.received] == wanted
    times = [at for at, _ in receiver.received]
    assert all(b - a >= 0.08 for a, b in pairwise(times))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}
    webhook.refresh_from_db()
    assert (webhook.state, webhook.consecutive_failures, webhook.failing_since) == (
        "active", 0, None,
    )  # fmt: skip
    assert len(mail.outbox) == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_disable_holds_enable_sends_and_drop_skips(
    tmp_path: Path, receiver: Receiver, staff_api: APIClient
) -> None:
    receiver.status = 200
    webhook = make_webhook(receiver.url)
    ingest(records(tmp_path, 2))
    url = f"/api/v1/webhooks/{webhook.pk}/"

    assert staff_api.patch(url, {"enabled": False}, format="json").status_code == 200
    listed = staff_api.get("/api/v1/deliveries/", {"webhook": webhook.pk}).json()["results"]
    assert {d["status"] for d in listed} == {"held"}
    assert {d["reason"] for d in listed} == {"held: the webhook is disabled"}
    assert shown(staff_api, webhook)["state"] == "disabled"
    assert deliveries_attempt(ids=open_ids(webhook)) == {} and receiver.received == []

    assert staff_api.patch(url, {"enabled": True}, format="json").status_code == 200
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}
    deliveries_attempt(ids=open_ids(webhook))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(receiver.received) == 2

    ingest(records(tmp_path, 2, name="cdr_C_01_202311061458_2"))
    assert staff_api.patch(url, {"enabled": False}, format="json").status_code == 200
    response = staff_api.patch(url, {"enabled": True, "drop_held": True}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "active"
    dropped = Delivery.objects.filter(status="skipped")
    assert dropped.count() == 2 and {d.reason for d in dropped} == {DROPPED}
    assert all(d.finished_at is not None for d in dropped)
    assert len(receiver.received) == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_pending_deliveries_of_a_webhook_disabled_by_any_path_are_held_not_left_pending(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The issue's bug: deliveries of a webhook disabled while they waited stayed "pending"
    for ever. Whatever disabled it, the sweeper holds them, visibly."""
    webhook = make_webhook(receiver.url)
    ingest(records(tmp_path, 3))
    Webhook.objects.filter(pk=webhook.pk).update(enabled=False)
    assert deliveries_attempt(ids=open_ids(webhook)) == {}  # never claimed
    deliveries_sweep()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"held"}


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_the_admin_shows_paused_webhooks_and_resumes_them(
    tmp_path: Path, receiver: Receiver, admin_client: Any
) -> None:
    from django.utils import timezone

    webhook = make_webhook(receiver.url)
    ingest(records(tmp_path, 1))
    Webhook.objects.filter(pk=webhook.pk).update(
        paused_at=timezone.now(), paused_reason="paused after 1.0 h of uninterrupted failure"
    )
    deliveries_sweep()
    index = admin_client.get("/admin/").content.decode()
    assert "Paused webhooks" in index and webhook.name in index
    assert "1 delivery held" in index
    page = admin_client.get(f"/admin/webhooks/webhook/{webhook.pk}/change/").content.decode()
    assert 'id="resume-webhook"' in page
    response = admin_client.post(f"/admin/webhooks/webhook/{webhook.pk}/resume/")
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert webhook.state == "active"
    assert Delivery.objects.get().status == "pending"
    assert "Paused webhooks" not in admin_client.get("/admin/").content.decode()


@pytest.mark.slow
def test_a_rate_limit_holds_across_two_workers_and_loses_nothing(
    process_env: dict[str, str], start_worker: Callable, httpserver: HTTPServer, tmp_path: Path
) -> None:
    """60 a minute, 12 deliveries, two worker processes: one send a second, evenly spaced
    (the same rule as 120 in two minutes, in a fraction of the CI time), each once."""
    from django.contrib.auth.models import User

    count, limit = 12, 60
    receiver = Receiver(httpserver)
    receiver.status = 200
    webhook = make_webhook(receiver.url, rate_limit_per_minute=limit)
    workers = [start_worker(queues="webhooks"), start_worker(queues="webhooks")]
    ingest(records(tmp_path, count))
    client = APIClient()
    client.force_authenticate(User.objects.create_user("ops", is_staff=True))

    wait_for(lambda: 2 <= len(receiver.received) < count - 2, 30)
    backlog = shown(client, webhook)
    assert backlog["pending_count"] >= 2 and backlog["expected_drain_at"] is not None
    wait_for(lambda: Delivery.objects.filter(status="succeeded").count() == count, 60)
    time.sleep(1.5)  # a send beyond the limit, or a duplicate, would arrive now
    times = sorted(at for at, _ in receiver.received)
    assert len(times) == count
    assert {event_id for _, event_id in receiver.received} == set(
        Delivery.objects.values_list("event_id", flat=True)
    )
    assert times[-1] - times[0] >= (count - 1) * 60 / limit * 0.95
    assert min(b - a for a, b in pairwise(times)) >= 0.8
    assert DeliveryAttempt.objects.count() == count
    assert sum(sum(": 200 succeeded" in line for line in w.output) for w in workers) == count


@pytest.mark.django_db
@pytest.mark.usefixtures("premium", "local")
def test_the_rate_limit_is_set_kept_removed_and_checked_through_the_api(
    staff_api: APIClient,
) -> None:
    created = staff_api.post(
        "/api/v1/webhooks/",
        {"name": "Limited", "url": "https://crm.example.com/hook", "rate_limit_per_minute": 30},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["rate_limit_per_minute"] == 30 and body["state"] == "active"
    assert (body["pending_count"], body["expected_drain_at"]) == (0, None)
    assert (body["consecutive_failures"], body["failing_since"], body["paused_at"]) == (
        0,
        None,
        None,
    )
    url = f"/api/v1/webhooks/{body['id']}/"
    assert (
        staff_api.patch(url, {"name": "Renamed"}, format="json").json()["rate_limit_per_minute"]
        == 30
    )
    for bad in (0, -1, "many", 10**9):
        response = staff_api.patch(url, {"rate_limit_per_minute": bad}, format="json")
        assert response.status_code == 400 and "rate_limit_per_minute" in response.json()
    removed = staff_api.patch(url, {"rate_limit_per_minute": None}, format="json")
    assert removed.json()["rate_limit_per_minute"] is None

    schema = staff_api.get("/api/v1/schema/", {"format": "json"}).json()
    webhook = schema["components"]["schemas"]["Webhook"]["properties"]
    for name in (
        "rate_limit_per_minute",
        "state",
        "paused_reason",
        "paused_at",
        "failing_since",
        "consecutive_failures",
        "pending_count",
        "expected_drain_at",
    ):
        assert webhook[name]["readOnly"] is True, name
    states = schema["components"]["schemas"]["WebhookStateEnum"]["enum"]
    assert states == ["active", "paused", "disabled"]
    assert "/api/v1/webhooks/{id}/resume/" in schema["paths"]
    status = schema["components"]["schemas"]["DeliveryStatusEnum"]["enum"]
    assert {"retrying", "held"} <= set(status)
