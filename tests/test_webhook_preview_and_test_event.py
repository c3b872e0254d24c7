"""POST /api/v1/webhooks/{id}/preview/ (issue 14, item 1: render without sending) and the
test event (item 8): `webhook-test: true`, the newest stored record (or settled call) that
matches instead of the 2023 sample, and the receiver's answer shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from cdr.models import Cdr
from tests.test_call_webhooks import call_hook, consult_transfer, stored_call
from tests.test_webhooks import (  # noqa: F401  (local: a fixture)
    ingest,
    local,
    make_webhook,
    reference_payload,
    reference_row,
    write_cdr_file,
)
from webhooks.delivery import generate_secret
from webhooks.models import Delivery, DeliveryAttempt, Header, Webhook

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("premium", "local")]

TEMPLATE = '{"caller": {{ cdr.callingPartyNumber|tojson }}, "event": {{ event_id|tojson }}}'


def store(tmp_path: Path, n: int, **changes: str) -> Cdr:
    row = {**reference_row(), "pkid": f"00000000-0000-4000-8000-{n:012d}", **changes}
    ingest(write_cdr_file(tmp_path / f"cdr_StandAloneCluster_01_202311061457_{n}", [row]))
    return Cdr.objects.get(pkid=row["pkid"])


def preview(client: APIClient, webhook: Webhook, **body: Any) -> Any:
    return client.post(f"/api/v1/webhooks/{webhook.pk}/preview/", body, format="json")


# --- preview -----------------------------------------------------------------------------------


def test_a_preview_renders_body_and_masked_headers_and_sends_nothing(
    tmp_path: Path, httpserver: HTTPServer, staff_api: APIClient
) -> None:
    webhook = make_webhook(
        httpserver.url_for("/hook"),
        [("callingPartyNumber", "startswith", "20")],
        body_template=TEMPLATE,
        method="PUT",
        secret=generate_secret(),
    )
    Header.objects.create(webhook=webhook, name="X-Api-Key", value="very-secret")
    first = store(tmp_path, 1, callingPartyNumber="2001")
    other = store(tmp_path, 2, callingPartyNumber="3001")  # newer, but not matching
    Delivery.objects.all().delete()
    response = preview(staff_api, webhook)
    assert response.status_code == 200, response.json()
    shown = response.json()
    assert (shown["source"], shown["cdr_id"], shown["call_id"]) == ("cdr", first.pk, None)
    assert shown["method"] == "PUT" and shown["url"] == httpserver.url_for("/hook")
    assert json.loads(shown["body"])["caller"] == "2001"
    headers = shown["headers"]
    assert headers["X-Api-Key"] == "••••••" and headers["webhook-signature"] == "v1,••••••"
    assert headers["Content-Type"] == "application/json" and "webhook-test" not in headers
    assert "very-secret" not in json.dumps(shown)
    # A given record, even one the conditions do not match.
    given = preview(staff_api, webhook, cdr_id=other.pk).json()
    assert given["cdr_id"] == other.pk and json.loads(given["body"])["caller"] == "3001"
    assert not httpserver.log and not Delivery.objects.exists()


def test_a_preview_without_stored_records_renders_the_sample(
    httpserver: HTTPServer, staff_api: APIClient
) -> None:
    webhook = make_webhook(httpserver.url_for("/hook"), meta={"event": "missed call"})
    shown = preview(staff_api, webhook).json()
    assert shown["source"] == "sample" and shown["cdr_id"] is None
    assert json.loads(shown["body"]) == reference_payload()


def test_a_preview_of_a_call_scope_webhook_renders_a_call(
    tmp_path: Path, httpserver: HTTPServer, staff_api: APIClient
) -> None:
    webhook = call_hook(httpserver.url_for("/hook"), body_template='{"legs": {{ cdrs|length }}}')
    call = stored_call(tmp_path, consult_transfer())
    latest = preview(staff_api, webhook).json()
    assert (latest["source"], latest["call_id"]) == ("call", call.pk)
    assert json.loads(latest["body"]) == {"legs": 3}
    assert preview(staff_api, webhook, call_id=call.pk).json()["call_id"] == call.pk
    missing = preview(staff_api, webhook, call_id=call.pk + 100)
    assert missing.status_code == 400 and "call_id" in missing.json()
    record = make_webhook(httpserver.url_for("/hook"), name="Records")
    refused = preview(staff_api, record, call_id=call.pk)
    assert refused.status_code == 400 and "call_id" in refused.json()


def test_a_preview_reports_a_failing_template(
    tmp_path: Path, httpserver: HTTPServer, staff_api: APIClient
) -> None:
    webhook = make_webhook(
        httpserver.url_for("/hook"), body_template="{{ 1 // (cdr.callingPartyNumber|int) }}"
    )
    cdr = store(tmp_path, 1, callingPartyNumber="anonymous")
    response = preview(staff_api, webhook, cdr_id=cdr.pk)
    assert response.status_code == 400
    assert "ZeroDivisionError" in response.json()["body_template"][0]


def test_only_staff_preview(httpserver: HTTPServer, api: APIClient) -> None:
    webhook = make_webhook(httpserver.url_for("/hook"))
    assert preview(api, webhook).status_code == 403


# --- test event --------------------------------------------------------------------------------


def test_the_test_event_says_so_and_sends_the_newest_matching_record(
    tmp_path: Path, httpserver: HTTPServer, staff_api: APIClient
) -> None:
    httpserver.expect_request("/hook").respond_with_json({"received": True}, status=201)
    webhook = make_webhook(
        httpserver.url_for("/hook"), [("callingPartyNumber", "eq", "2001")], body_template=TEMPLATE
    )
    store(tmp_path, 1, callingPartyNumber="2001")
    newest = store(tmp_path, 2, callingPartyNumber="2001")
    store(tmp_path, 3, callingPartyNumber="3001")
    attempt = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/test/", {}, format="json").json()
    ((request, _),) = httpserver.log
    assert request.headers["webhook-test"] == "true"
    assert attempt["request_headers"]["webhook-test"] == "true"
    body = json.loads(request.get_data())
    assert body["caller"] == "2001" and body["event"] == request.headers["webhook-id"]
    # The response is shown: status and body in the answer.
    assert attempt["status_code"] == 201 and json.loads(attempt["response_body"]) == {
        "received": True
    }
    test = Delivery.objects.get(kind=Delivery.Kind.TEST)
    assert test.cdr_id == newest.pk


def test_the_test_event_falls_back_to_the_sample(tmp_path: Path, httpserver: HTTPServer) -> None:
    from webhooks.services import webhook_test_send

    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = make_webhook(
        httpserver.url_for("/hook"),
        [("callingPartyNumber", "eq", "9999")],
        meta={"event": "missed call"},
    )
    store(tmp_path, 1)  # stored, but not matching
    webhook_test_send(webhook=webhook)
    assert json.loads(httpserver.log[0][0].get_data()) == reference_payload()


def test_the_test_event_of_a_call_webhook_sends_the_newest_matching_settled_call(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    from webhooks.services import webhook_test_send

    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = call_hook(httpserver.url_for("/hook"), [("call.legs", "gte", 2)])
    call = stored_call(tmp_path, consult_transfer())
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["call"]["legs"] == 3 and len(body["cdrs"]) == 3
    assert httpserver.log[0][0].headers["webhook-test"] == "true"
    assert Delivery.objects.get(kind=Delivery.Kind.TEST).call_id == call.pk


def test_the_admin_shows_the_test_event_response(httpserver: HTTPServer, admin_client: Any) -> None:
    httpserver.expect_request("/hook").respond_with_data("accepted: ticket 42", status=200)
    webhook = make_webhook(httpserver.url_for("/hook"))
    page = admin_client.post(
        "/admin/webhooks/webhook/",
        {"action": "send_test_event", "_selected_action": [webhook.pk]},
        follow=True,
    )
    text = page.content.decode()
    assert "HTTP 200" in text and "accepted: ticket 42" in text
    assert DeliveryAttempt.objects.get().request_headers["webhook-test"] == "true"


def test_a_test_event_with_a_failing_template_is_not_sent(
    tmp_path: Path, httpserver: HTTPServer, staff_api: APIClient
) -> None:
    webhook = make_webhook(
        httpserver.url_for("/hook"), body_template="{{ 1 // (cdr.callingPartyNumber|int) }}"
    )
    store(tmp_path, 1, callingPartyNumber="anonymous")
    response = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/test/", {}, format="json")
    assert response.status_code == 400 and "ZeroDivisionError" in str(response.json())
    assert not httpserver.log
