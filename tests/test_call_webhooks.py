"""Call-scope webhooks (issue 13): conditions on calls, firing once per settled call, the call
payload, dry run and test send, through real files, a real receiver on 127.0.0.1 and the
registered `cdr.contracts.CallListener` (what the settle sweep calls, in its transaction).

Calls are built as the settle sweep leaves them: the legs and CMRs ingested from files, a
`Call` row with its facts and `settled_at`, the records pointing at it.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from cdr import generator
from cdr.calls import calls_settle
from cdr.contracts import call_listener
from cdr.fields import CMR_FIELDS, header
from cdr.models import Call, Cdr, Cmr
from cdr.services import cdr_file_ingest
from licensing.selectors import license_cache_clear
from tests.test_dropfolder import wait_for
from tests.test_webhooks import (  # noqa: F401  (local: a fixture)
    ingest,
    local,
    make_webhook,
    reference_payload,
    reference_row,
    write_cdr_file,
)
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery, Webhook
from webhooks.services import webhook_test_send

pytestmark = [pytest.mark.usefixtures("premium", "local")]

T0 = 1699282642  # the reference record's origination, 2023-11-06 14:57:22 UTC


def utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def leg(pkid: str, **values: str) -> dict[str, str]:
    """A leg of the reference call (cluster StandAloneCluster, global call id 1/28001)."""
    return {**reference_row(), "pkid": pkid, **values}


def consult_transfer() -> list[dict[str, str]]:
    """1001 calls 2001, who consults 2002 and transfers: three legs. The reference record
    (a missed call to 1000) comes first: the payload must render it exactly as record scope
    renders it."""
    return [
        leg("ref"),
        leg(
            "consult",
            callingPartyNumber="2001",
            originalCalledPartyNumber="2002",
            finalCalledPartyNumber="2002",
            dateTimeOrigination=str(T0 + 20),
            dateTimeConnect=str(T0 + 25),
            dateTimeDisconnect=str(T0 + 40),
            duration="15",
            origLegCallIdentifier="19111443",
            destLegIdentifier="19111444",
        ),
        leg(
            "final",
            callingPartyNumber="1001",
            originalCalledPartyNumber="2001",
            finalCalledPartyNumber="2002",
            dateTimeOrigination=str(T0 + 5),
            dateTimeConnect=str(T0 + 10),
            dateTimeDisconnect=str(T0 + 200),
            duration="190",
            origCallTerminationOnBehalfOf="10",
        ),
    ]


def write_cmr_file(path: Path, rows: list[dict[str, str]]) -> Path:
    names = header("cmr", 48)
    lines = [",".join(f'"{n}"' for n in names), ",".join(f.type for f in CMR_FIELDS[:48])]
    for values in rows:
        cells = []
        for spec in CMR_FIELDS[:48]:
            value = values.get(spec.name, "")
            cells.append(value if spec.is_integer else '"' + value.replace('"', '""') + '"')
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def cmr(pkid: str, leg_id: str, metrics: str) -> dict[str, str]:
    return {
        "cdrRecordType": "2",
        "globalCallID_callManagerId": "1",
        "globalCallID_callId": "28001",
        "nodeId": "1",
        "directoryNum": "2002",
        "callIdentifier": leg_id,
        "dateTimeStamp": str(T0 + 200),
        "numberPacketsSent": "9000",
        "numberPacketsReceived": "9000",
        "numberPacketsLost": "12",
        "jitter": "7",
        "latency": "0",
        "pkid": pkid,
        "globalCallId_ClusterID": "StandAloneCluster",
        "deviceName": "SEP0022905C7710",
        "varVQMetrics": metrics,
    }


FACTS: dict[str, Any] = {
    "answered": True,
    "missed": False,
    "voicemail": False,
    "transferred": True,
    "forwarded": False,
    "conference": False,
    "legs": 3,
    "duration": 190,
    "ring_seconds": 5,
    "caller": "1001",
    "dialed": "2001",
    "answered_by": "2002",
    "cause": 16,
    "mos_min": 2.9,
    "jitter_max": 7,
    "loss_pct": 0.13,
}


_seq = iter(range(1, 10_000))


def stored_call(
    tmp_path: Path,
    legs: list[dict[str, str]],
    cmrs: list[dict[str, str]] = (),  # type: ignore[assignment]
    *,
    settled: bool = True,
    **facts: Any,
) -> Call:
    """Ingest the legs (and CMRs) and tie them to one call, as assembly and settling do."""
    n = next(_seq)
    ingest(write_cdr_file(tmp_path / f"cdr_StandAloneCluster_01_202311061457_{n}", legs))
    if cmrs:
        ingest(write_cmr_file(tmp_path / f"cmr_StandAloneCluster_01_202311061457_{n}", cmrs))
    now = timezone.now()
    call = Call.objects.create(
        cluster="StandAloneCluster",
        call_manager_id=1,
        call_id=28001,
        first_arrival_at=now,
        last_arrival_at=now,
        settled_at=now if settled else None,
        settle_count=1 if settled else 0,
        started_at=utc(min(int(row["dateTimeOrigination"]) for row in legs)),
        ended_at=utc(max(int(row["dateTimeDisconnect"]) for row in legs)),
        cmr_count=len(cmrs),
        **{**FACTS, "legs": len(legs), **facts},
    )
    Cdr.objects.filter(pkid__in=[row["pkid"] for row in legs]).update(call_ref=call)
    Cmr.objects.filter(pkid__in=[row["pkid"] for row in cmrs]).update(call_ref=call)
    return call


def settle(*calls: Call) -> None:
    """What the settle sweep does once the calls are settled: tell the listener, in its
    transaction."""
    listener = call_listener()
    assert listener is not None, "webhooks registers its CallListener in AppConfig.ready()"
    with transaction.atomic():
        listener.settled([call.pk for call in calls])


def call_hook(url: str, conditions: list[tuple[str, str, object]] = (), **fields: Any) -> Webhook:  # type: ignore[assignment]
    return make_webhook(url, conditions, scope=Webhook.Scope.CALL, **fields)


# --- firing --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_call_fires_once_with_all_its_legs_and_cmrs_in_the_documented_shape(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")
    webhook = call_hook(httpserver.url_for("/hook"), meta={"event": "call"}, name="Calls")
    legs = consult_transfer()
    metrics = "MLQK=4.5000;MLQKav=4.1000;MLQKmn=2.9000;MLQKmx=4.5000;CCR=0.0021"
    call = stored_call(tmp_path, legs, [cmr("m1", "19111444", metrics), cmr("m2", "19111441", "")])
    # Ingest fired nothing: a call-scope webhook waits for the call to settle.
    assert not Delivery.objects.exists()

    settle(call)

    delivery = Delivery.objects.get()
    assert (delivery.webhook_id, delivery.call_id, delivery.cdr_id) == (webhook.pk, call.pk, None)
    assert delivery.kind == Delivery.Kind.EVENT and delivery.status == Delivery.Status.PENDING
    webhook.refresh_from_db()
    assert webhook.hit_count == 1 and webhook.last_hit_at is not None

    attempt = deliveries_attempt(ids=[delivery.pk])[delivery.pk]
    assert attempt is not None and attempt.status_code == 200
    ((request, _),) = httpserver.log
    body = json.loads(request.get_data())
    assert list(body) == ["call", "cdrs", "cmrs", "meta", "name"]
    assert body["call"] == {
        "cluster": "StandAloneCluster",
        "callManagerId": 1,
        "callId": 28001,
        "started": "2023-11-06T14:57:22Z",
        "ended": "2023-11-06T15:00:42Z",
        "answered": True,
        "missed": False,
        "voicemail": False,
        "transferred": True,
        "forwarded": False,
        "conference": False,
        "legs": 3,
        "duration": 190,
        "ringSeconds": 5,
        "caller": "1001",
        "dialed": "2001",
        "answeredBy": "2002",
        "cause": 16,
        "mosMin": 2.9,
        "jitterMax": 7,
        "lossPct": 0.13,
    }
    # Each leg exactly as a record-scope webhook renders it, in origination order.
    assert body["cdrs"][0] == {**reference_payload()["cdr"], "pkid": "ref"}
    assert [c["pkid"] for c in body["cdrs"]] == ["ref", "final", "consult"]
    assert body["cdrs"][1]["dateTimeConnect"] == "2023-11-06T14:57:32Z"
    assert body["cdrs"][1]["duration"] == 190
    # CMRs: their non-empty fields as text.
    first = body["cmrs"][0]
    assert first["varVQMetrics"] == metrics and first["jitter"] == "7"
    assert first["callIdentifier"] == "19111444" and "videoDuration" not in first
    assert "varVQMetrics" not in body["cmrs"][1] and len(body["cmrs"]) == 2
    assert (body["meta"], body["name"]) == ({"event": "call"}, "Calls")
    delivery.refresh_from_db()
    assert json.loads(delivery.body) == body and delivery.status == Delivery.Status.SUCCEEDED


@pytest.mark.django_db
def test_a_call_settled_again_or_resent_does_not_fire_again(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    webhook = call_hook(httpserver.url_for("/hook"))
    legs = consult_transfer()
    call = stored_call(tmp_path, legs[:2])
    settle(call)
    # A late leg opens the call; it settles again, with one more leg; and CUCM resends.
    ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_02_202311061459_1", legs))
    Cdr.objects.filter(pkid="final").update(call_ref=call)
    Call.objects.filter(pk=call.pk).update(legs=3, settle_count=2)
    settle(call)
    settle(call)
    webhook.refresh_from_db()
    assert Delivery.objects.filter(call=call).count() == 1
    assert webhook.hit_count == 1


@pytest.mark.django_db
def test_open_merged_and_record_scope_are_left_alone(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    calls = call_hook(httpserver.url_for("/calls"), name="Calls")
    records = make_webhook(httpserver.url_for("/records"), name="Records")
    make_webhook(httpserver.url_for("/off"), name="Off", scope=Webhook.Scope.CALL, enabled=False)
    open_call = stored_call(tmp_path, consult_transfer()[:1], settled=False)
    # The record webhook fired at ingest, as before, once for the one record.
    assert Delivery.objects.get().webhook_id == records.pk
    merged = stored_call(tmp_path, [leg("other", globalCallID_callId="28002")])
    Call.objects.filter(pk=merged.pk).update(merged_into=open_call)
    settle(open_call, merged)
    assert not Delivery.objects.filter(webhook=calls).exists()
    settled = stored_call(tmp_path, [leg("third", globalCallID_callId="28003")])
    settle(settled)
    assert Delivery.objects.get(webhook=calls).call_id == settled.pk
    records.refresh_from_db()
    assert records.hit_count == 3 and Delivery.objects.filter(webhook=records).count() == 3


@pytest.mark.django_db
def test_conditions_on_call_fields_and_on_any_leg(tmp_path: Path, httpserver: HTTPServer) -> None:
    url = httpserver.url_for("/hook")
    # Two CDR conditions met by two different legs, with call facts: fires.
    both = call_hook(
        url,
        [
            ("call.transferred", "eq", True),
            ("callingPartyNumber", "eq", "1001"),
            ("originalCalledPartyNumber", "eq", "2002"),
            ("CALL.DURATION", "gt", 100),
            ("call.caller", "startswith", "10"),
        ],
        name="both",
    )
    call_hook(url, [("finalCalledPartyNumber", "eq", "9999")], name="no leg")
    call_hook(url, [("call.answered", "eq", False)], name="not answered")
    call_hook(url, [("call.legs", "in", [1, 2]), ("duration", "gt", 0)], name="legs")
    call_hook(url, [("call.lossPct", "lt", 0.2), ("call.cause", "eq", 16)], name="loss")
    missed = call_hook(url, [("call.missed", "eq", "true")], name="missed")
    call = stored_call(tmp_path, consult_transfer())
    voicemail = stored_call(
        tmp_path,
        [leg("vm", globalCallID_callId="28009")],
        answered=False,
        missed=True,
        voicemail=True,
        duration=0,
        ring_seconds=None,
        mos_min=None,
        jitter_max=None,
        loss_pct=None,
    )
    settle(call, voicemail)
    fired = {(d.webhook.name, d.call_id) for d in Delivery.objects.select_related("webhook")}
    assert fired == {
        ("both", call.pk),
        ("loss", call.pk),
        ("not answered", voicemail.pk),
        ("missed", voicemail.pk),
    }
    both.refresh_from_db()
    missed.refresh_from_db()
    assert (both.hit_count, missed.hit_count) == (1, 1)


@pytest.mark.django_db
def test_a_condition_on_missing_quality_is_false(tmp_path: Path, httpserver: HTTPServer) -> None:
    url = httpserver.url_for("/hook")
    call_hook(url, [("call.mosMin", "lt", 3.5)], name="poor")
    call_hook(url, [("call.mosMin", "ne", 4)], name="not four")
    call_hook(url, [("call.jitterMax", "gte", 0)], name="jitter")
    call_hook(url, [("call.mosMin", "is_empty", "")], name="no mos")
    no_mos = stored_call(tmp_path, consult_transfer(), mos_min=None, jitter_max=None)
    poor = stored_call(tmp_path, [leg("p", globalCallID_callId="28005")], mos_min=2.9)
    settle(no_mos, poor)
    fired = {(d.webhook.name, d.call_id) for d in Delivery.objects.select_related("webhook")}
    assert fired == {
        ("poor", poor.pk),
        ("not four", poor.pk),
        ("jitter", poor.pk),
        ("no mos", no_mos.pk),
    }


@pytest.mark.django_db
def test_without_a_license_a_call_counts_but_nothing_is_sent(
    tmp_path: Path, httpserver: HTTPServer, settings: Any
) -> None:
    settings.LICENSE_PUBLIC_KEYS = {"other": base64.b64encode(b"\x01" * 32).decode()}
    license_cache_clear()
    webhook = call_hook(httpserver.url_for("/hook"))
    call = stored_call(tmp_path, consult_transfer())
    settle(call)
    delivery = Delivery.objects.get()
    webhook.refresh_from_db()
    assert webhook.hit_count == 1
    assert (delivery.status, delivery.reason) == (Delivery.Status.SKIPPED, "license")
    assert deliveries_attempt(ids=[delivery.pk]).get(delivery.pk) is None
    assert httpserver.log == []


@pytest.mark.django_db(transaction=True)
def test_two_racing_settles_of_one_call_fire_once(tmp_path: Path, httpserver: HTTPServer) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL (SQLite runs one writer at a time)")
    webhook = call_hook(httpserver.url_for("/hook"))
    call = stored_call(tmp_path, consult_transfer())
    listener = call_listener()
    assert listener is not None
    inside = threading.Barrier(2)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            with transaction.atomic():
                # Both transactions have begun and seen the call before either inserts.
                Call.objects.filter(pk=call.pk).exists()
                inside.wait(10)
                listener.settled([call.pk])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    webhook.refresh_from_db()
    assert Delivery.objects.filter(call=call).count() == 1
    assert webhook.hit_count == 1


# --- API, dry run, test send, admin --------------------------------------------------------


@pytest.mark.django_db
def test_scope_in_the_api_and_call_fields_refused_in_record_scope(staff_api: APIClient) -> None:
    base = {"name": "Missed", "url": "https://crm.example.com/hook"}
    missed = [{"field": "call.missed", "operator": "eq", "value": True}]
    refused = staff_api.post("/api/v1/webhooks/", {**base, "conditions": missed}, format="json")
    assert refused.status_code == 400
    (problem,) = refused.json()["conditions"][0]["field"]
    assert "call-scope webhooks only" in problem and 'scope to "call"' in problem

    created = staff_api.post(
        "/api/v1/webhooks/", {**base, "scope": "call", "conditions": missed}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert created.json()["scope"] == "call"
    assert created.json()["conditions"] == [
        {"field": "call.missed", "operator": "eq", "value": True}
    ]
    url = f"/api/v1/webhooks/{created.json()['id']}/"
    # Back to record scope with the stored call condition: refused, nothing changes.
    back = staff_api.patch(url, {"scope": "record"}, format="json")
    assert back.status_code == 400 and "call-scope" in back.json()["conditions"][0]["field"][0]
    assert Webhook.objects.get().scope == "call"
    # Operators by type: booleans take eq true/false, numbers the numeric ones.
    for condition, key in (
        ({"field": "call.missed", "operator": "gt", "value": 1}, "operator"),
        ({"field": "call.missed", "operator": "eq", "value": "maybe"}, "value"),
        ({"field": "call.caller", "operator": "gt", "value": 1}, "operator"),
        ({"field": "call.mosMin", "operator": "lt", "value": "poor"}, "value"),
        ({"field": "call.nope", "operator": "eq", "value": 1}, "field"),
    ):
        bad = staff_api.patch(url, {"conditions": [condition]}, format="json")
        assert bad.status_code == 400 and key in bad.json()["conditions"][0], condition
    good = staff_api.patch(
        url,
        {"conditions": [{"field": "call.mosMin", "operator": "lt", "value": "3.5"}]},
        format="json",
    )
    assert good.json()["conditions"][0]["value"] == 3.5
    # Record scope is the default, and a record webhook reads as before plus its scope.
    plain = staff_api.post("/api/v1/webhooks/", {**base, "name": "Plain"}, format="json")
    assert plain.json()["scope"] == "record"


@pytest.mark.django_db
def test_the_field_catalogue_lists_call_fields_for_call_scope(api: APIClient) -> None:
    assert api.get("/api/v1/cdr-fields/").json()["count"] == 133
    data = api.get("/api/v1/cdr-fields/?scope=call").json()
    assert data["count"] == 149 and data["next"] is None
    fields = {row["name"]: row for row in data["results"]}
    assert data["results"][0]["name"] == "call.answered"
    assert fields["call.missed"]["operators"] == ["eq"]
    assert fields["call.missed"]["kind"] == "boolean" and fields["call.missed"]["type"] == "BOOLEAN"
    mos = fields["call.mosMin"]
    assert (mos["kind"], mos["type"], mos["generation"]) == ("number", "DECIMAL", "call")
    assert "lt" in mos["operators"] and "MLQKmn" in mos["description"]
    assert fields["call.caller"]["kind"] == "text" and "regex" in fields["call.caller"]["operators"]
    assert fields["duration"]["kind"] == "number"  # every CDR field too
    assert api.get("/api/v1/cdr-fields/?scope=leg").status_code == 400


@pytest.mark.django_db
def test_dry_run_over_settled_calls(tmp_path: Path, staff_api: APIClient) -> None:
    webhook = call_hook("https://crm.example.com/hook", [("call.transferred", "eq", True)])
    transferred = stored_call(tmp_path, consult_transfer())
    stored_call(tmp_path, [leg("plain", globalCallID_callId="28006")], transferred=False)
    stored_call(tmp_path, [leg("open", globalCallID_callId="28007")], settled=False)
    url = f"/api/v1/webhooks/{webhook.pk}/dry-run/"
    result = staff_api.post(url, {}, format="json").json()
    assert (result["evaluated"], result["matched"]) == (2, 1)
    (sample,) = result["sample"]
    assert (sample["id"], sample["caller"], sample["legs"]) == (transferred.pk, "1001", 3)
    # Conditions from the body: a CDR field holds when any leg has it.
    any_leg = {
        "conditions": [{"field": "finalCalledPartyNumber", "operator": "eq", "value": "2002"}]
    }
    assert staff_api.post(url, any_leg, format="json").json()["matched"] == 1
    # The same saved conditions tried as a record webhook: refused, with the reason.
    as_record = staff_api.post(url, {"scope": "record"}, format="json")
    assert as_record.status_code == 400 and "call-scope" in json.dumps(as_record.json())
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_the_test_event_of_a_call_webhook_is_a_sample_call(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = call_hook(httpserver.url_for("/hook"), meta={"event": "missed call"})
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    body = json.loads(httpserver.log[0][0].get_data())
    assert body == {
        "call": {
            "cluster": "StandAloneCluster",
            "callManagerId": 1,
            "callId": 28001,
            "started": "2023-11-06T14:57:22Z",
            "ended": "2023-11-06T14:57:25Z",
            "answered": False,
            "missed": True,
            "voicemail": False,
            "transferred": False,
            "forwarded": False,
            "conference": False,
            "legs": 1,
            "duration": 0,
            "ringSeconds": 3,
            "caller": "1000",
            "dialed": "1000",
            "answeredBy": "",
            "cause": 16,
            "mosMin": None,
            "jitterMax": None,
            "lossPct": None,
        },
        "cdrs": [reference_payload()["cdr"]],
        "cmrs": [],
        "meta": {"event": "missed call"},
        "name": webhook.name,
    }
    # A stored CDR of a call: that call is sent, and the test delivery points at it.
    call = stored_call(tmp_path, consult_transfer())
    attempt = webhook_test_send(webhook=webhook, cdr=Cdr.objects.get(pkid="consult"))
    assert attempt is not None and attempt.status_code == 200
    sent = json.loads(httpserver.log[1][0].get_data())
    assert len(sent["cdrs"]) == 3 and sent["call"]["legs"] == 3
    test = Delivery.objects.get(kind=Delivery.Kind.TEST, call=call)
    assert test.cdr.pkid == "consult"


@pytest.mark.django_db
def test_the_delivery_log_shows_the_call(
    tmp_path: Path, httpserver: HTTPServer, admin_client: Any, staff_api: APIClient
) -> None:
    call_hook(httpserver.url_for("/hook"))
    call = stored_call(tmp_path, consult_transfer())
    settle(call)
    delivery = Delivery.objects.get()
    page = admin_client.get(f"/admin/webhooks/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f"call {call.pk}" in text and "Not sent yet" in text and "&quot;cdrs&quot;" in text
    listing = admin_client.get("/admin/webhooks/delivery/")
    assert f"call {call.pk}" in listing.content.decode()
    shown = staff_api.get(f"/api/v1/deliveries/{delivery.pk}/").json()
    assert (shown["call"], shown["cdr"], shown["body_preview"]) == (call.pk, None, True)
    assert json.loads(shown["body"])["call"]["legs"] == 3


@pytest.mark.django_db
def test_a_call_deleted_before_its_first_send_fails_the_delivery(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    call_hook(httpserver.url_for("/hook"))
    call = stored_call(tmp_path, consult_transfer())
    settle(call)
    delivery = Delivery.objects.get()
    # Deleted by SQL, as retention deletes rows in bulk: the delivery still points at it.
    Call.objects.filter(pk=call.pk)._raw_delete(Call.objects.db)
    assert deliveries_attempt(ids=[delivery.pk])[delivery.pk] is None
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.reason == "the call was deleted before it could be sent"
    assert httpserver.log == []


@pytest.mark.slow
def test_a_settled_call_reaches_the_receiver_through_the_worker(
    process_env: dict[str, str], start_worker: Callable, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = call_hook(httpserver.url_for("/hook"))
    call = stored_call(tmp_path, consult_transfer())
    start_worker(queues="webhooks")
    settle(call)  # commits: the delivery is handed to the worker after commit
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).exists())
    ((request, _),) = httpserver.log
    body = json.loads(request.get_data())
    assert body["call"]["legs"] == 3 and len(body["cdrs"]) == 3
    webhook.refresh_from_db()
    assert (webhook.hit_count, webhook.delivered_count) == (1, 1)


# --- through the real path: ingest assembles the call, the settle sweep fires ---------------

SETTLED = timedelta(seconds=121)  # past the default CALL_SETTLE_SECONDS


def generated_call(scenario: str, *, seed: int = 1, cmr: bool = False) -> generator.Call:
    rows = {"answered": 1, "missed": 1, "voicemail": 1, "transferred": 3}
    calls = list(
        generator.iter_calls(records=rows[scenario], mix={scenario: 1}, seed=seed, cmr=cmr)
    )
    assert len(calls) == 1 and calls[0].scenario == scenario
    return calls[0]


def ingest_rows(tmp_path: Path, kind: str, rows: list[dict[str, object]], node: int = 1) -> None:
    path = tmp_path / f"{kind}_StandAloneCluster_{node:02d}_202501060800_{next(_seq)}"
    generator.write_file(path, kind, rows)
    cdr_file_ingest(path=path, source="replay")


def settle_due() -> list[int]:
    return calls_settle(now=timezone.now() + SETTLED)


@pytest.mark.django_db
def test_a_consult_transfer_in_two_files_fires_once_with_its_three_legs(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = call_hook(httpserver.url_for("/hook"), [("call.transferred", "eq", True)])
    original, consult, final = (r.cdr for r in generated_call("transferred").records)
    ingest_rows(tmp_path, "cdr", [final], node=2)
    ingest_rows(tmp_path, "cdr", [consult, original], node=1)
    assert not Delivery.objects.exists()
    (call_id,) = settle_due()
    delivery = Delivery.objects.get()
    assert delivery.call_id == call_id
    deliveries_attempt(ids=[delivery.pk])
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["call"]["legs"] == 3 and body["call"]["transferred"] is True
    assert sorted(c["pkid"] for c in body["cdrs"]) == sorted(
        str(r["pkid"]) for r in (original, consult, final)
    )
    # CUCM resends the files, and the sweep runs again: nothing more.
    ingest_rows(tmp_path, "cdr", [original, consult, final], node=1)
    settle_due()
    webhook.refresh_from_db()
    assert Delivery.objects.count() == 1 and webhook.hit_count == 1


@pytest.mark.django_db
def test_a_missed_call_to_voicemail_fires_call_missed(
    tmp_path: Path, httpserver: HTTPServer, settings: Any
) -> None:
    settings.VOICEMAIL_NUMBERS = frozenset({"8000"})
    missed = call_hook(httpserver.url_for("/hook"), [("call.missed", "eq", True)], name="m")
    answered = call_hook(httpserver.url_for("/hook"), [("call.answered", "eq", True)], name="a")
    ingest_rows(tmp_path, "cdr", [generated_call("voicemail", seed=4).records[0].cdr])
    (call_id,) = settle_due()
    assert Delivery.objects.get().webhook_id == missed.pk
    assert not Delivery.objects.filter(webhook=answered).exists()
    assert Call.objects.get(pk=call_id).voicemail


@pytest.mark.django_db
def test_poor_mos_fires_once_its_cmr_file_arrived(tmp_path: Path, httpserver: HTTPServer) -> None:
    call_hook(httpserver.url_for("/hook"), [("call.mosMin", "lt", 3.5)])
    record = generated_call("answered", seed=5, cmr=True).records[0]
    ingest_rows(tmp_path, "cdr", [record.cdr])
    settle_due()
    assert not Delivery.objects.exists()  # no CMR yet: no MOS, the condition is false
    cmrs = [dict(row) for row in record.cmrs]
    cmrs[0]["varVQMetrics"] = "MLQK=4.1000;MLQKav=3.9500;MLQKmn=2.9000;MLQKmx=4.5;MLQKvr=0.95"
    ingest_rows(tmp_path, "cmr", cmrs)
    (call_id,) = settle_due()
    delivery = Delivery.objects.get()
    assert delivery.call_id == call_id
    deliveries_attempt(ids=[delivery.pk])
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["call"]["mosMin"] == 2.9 and len(body["cmrs"]) == len(cmrs)
