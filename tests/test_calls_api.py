from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from cdr.models import Cdr, Cmr
from tests.calls_fixtures import Calls, calls_build


@pytest.fixture
def calls(db: None, tmp_path: Path, settings: Any) -> Calls:
    return calls_build(tmp_path, settings)


def ids(response: object) -> set[int]:
    assert response.status_code == 200, response.data  # type: ignore[attr-defined]
    return {row["id"] for row in response.data["results"]}  # type: ignore[attr-defined]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/calls/", "/api/v1/calls/1/"])
def test_calls_need_credentials(url: str) -> None:
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_calls_are_read_only_even_for_staff(staff_api: APIClient, calls: Calls) -> None:
    assert staff_api.post("/api/v1/calls/", {}).status_code == 405
    assert staff_api.delete(f"/api/v1/calls/{calls.missed.pk}/").status_code == 405
    assert staff_api.get(f"/api/v1/calls/{calls.missed.pk}/").status_code == 200


def test_the_list_hides_merged_calls_newest_first(api: APIClient, calls: Calls) -> None:
    everything = {calls.transferred.pk, calls.missed.pk, calls.voicemail.pk, calls.open.pk}
    assert ids(api.get("/api/v1/calls/")) == everything
    rows = api.get("/api/v1/calls/", {"settled": "true"}).data["results"]
    assert [row["id"] for row in rows] == [
        calls.voicemail.pk,
        calls.missed.pk,
        calls.transferred.pk,
    ]
    assert api.get(f"/api/v1/calls/{calls.merged.pk}/").status_code == 404


def test_a_list_row_holds_the_facts_in_the_api_s_snake_case(api: APIClient, calls: Calls) -> None:
    row = api.get("/api/v1/calls/", {"number": "1001"}).data["results"][0]
    arrivals = {key: row.pop(key) for key in ("settled_at", "first_arrival_at", "last_arrival_at")}
    assert all(arrivals.values())
    assert row == {
        "id": calls.transferred.pk,
        "cluster": "StandAloneCluster",
        "call_manager_id": 1,
        "call_id": calls.transferred.call_id,
        "started_at": "2026-11-30T09:01:00Z",
        "ended_at": "2026-11-30T09:06:05Z",
        "legs": 3,
        "cmr_count": 2,
        "answered": True,
        "missed": False,
        "voicemail": False,
        "transferred": True,
        "forwarded": False,
        "conference": False,
        "duration": 300,
        "ring_seconds": 5,
        "caller": "1001",
        "dialed": "2000",
        "answered_by": "2000",
        "cause": 16,
        "cause_text": calls.transferred.cause_text,
        "mos_min": 2.9,
        "jitter_max": 7,
        "loss_pct": 0.333,
        "settled": True,
    }
    assert row["cause_text"]


def test_an_open_call_has_no_facts_yet(api: APIClient, calls: Calls) -> None:
    row = api.get(f"/api/v1/calls/{calls.open.pk}/").data
    assert row["settled"] is False and row["settled_at"] is None
    assert row["started_at"] is None and row["caller"] == ""
    assert [leg["calling_party_number"] for leg in row["cdrs"]] == ["1004"]


def test_the_detail_has_the_legs_in_origination_order_and_the_cmrs(
    api: APIClient, calls: Calls
) -> None:
    body = api.get(f"/api/v1/calls/{calls.transferred.pk}/").data
    legs = list(Cdr.objects.filter(call_ref=calls.transferred).order_by("origination_at"))
    assert [leg["id"] for leg in body["cdrs"]] == [leg.pk for leg in legs]
    assert [leg["calling_party_number"] for leg in body["cdrs"]] == ["1001", "2000", "1001"]
    # Each leg as the CDR list renders it, with its link back to the call.
    for leg in body["cdrs"]:
        assert [leg] == api.get("/api/v1/cdrs/", {"pkid": leg["pkid"]}).data["results"]
    assert {leg["call"] for leg in body["cdrs"]} == {calls.transferred.pk}
    cmrs = Cmr.objects.filter(call_ref=calls.transferred).order_by("stamp_at", "id")
    assert [cmr["id"] for cmr in body["cmrs"]] == [cmr.pk for cmr in cmrs]
    assert set(body["cmrs"][0]) >= {"directory_num", "jitter", "mos", "call"}
    assert [cmr["mos"] for cmr in body["cmrs"]] == [2.9, 4.1]
    assert body["caller"] == "1001" and body["legs"] == 3


def test_records_name_their_call(api: APIClient, calls: Calls) -> None:
    leg = api.get("/api/v1/cdrs/", {"number": "1002"}).data["results"][0]
    assert leg["call"] == calls.missed.pk
    cmr = Cmr.objects.filter(call_ref=calls.transferred).first()
    assert api.get(f"/api/v1/cmrs/{cmr.pk}/").data["call"] == calls.transferred.pk


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # time range: the names the CDR list uses, on the call's start (an open call has none)
        ({"since": "2026-11-30T09:03:00Z"}, {"missed", "voicemail"}),
        ({"until": "2026-11-30T09:03:00Z"}, {"transferred"}),
        ({"since": "2026-11-30T10:02:00+01:00", "until": "2026-11-30T09:04:00Z"}, {"missed"}),
        # any number: the call's caller, dialed and answered-by, and any leg's numbers
        ({"number": "1001"}, {"transferred"}),
        ({"number": "2000"}, {"transferred"}),
        ({"number": "3000"}, {"transferred"}),  # the consulted party: only in the legs
        ({"number": "8000"}, {"voicemail"}),
        ({"number": "2001"}, {"missed"}),
        ({"number": "1004"}, {"open"}),
        ({"number": "5555"}, set()),
        ({"cluster": "West"}, {"voicemail"}),
        ({"answered": "true"}, {"transferred"}),
        ({"answered": "false"}, {"missed", "voicemail", "open"}),
        ({"missed": "true"}, {"missed", "voicemail"}),
        ({"missed": "false"}, {"transferred", "open"}),
        ({"voicemail": "true"}, {"voicemail"}),
        ({"mos_below": "3.5"}, {"transferred"}),
        ({"mos_below": "4.5"}, {"transferred", "voicemail"}),
        ({"mos_below": "2.9"}, set()),
        ({"settled": "true"}, {"transferred", "missed", "voicemail"}),
        ({"settled": "false"}, {"open"}),
        ({"number": "1003", "settled": "true", "voicemail": "true"}, {"voicemail"}),
    ],
)
def test_call_filters(
    api: APIClient, calls: Calls, query: dict[str, str], expected: set[str]
) -> None:
    assert ids(api.get("/api/v1/calls/", query)) == {getattr(calls, name).pk for name in expected}


def test_a_number_finds_the_call_not_its_merged_half(api: APIClient, calls: Calls) -> None:
    # Both halves of the transfer had legs with 2000; they are one call now.
    assert calls.merged.merged_into_id == calls.transferred.pk
    assert ids(api.get("/api/v1/calls/", {"number": "2000"})) == {calls.transferred.pk}


@pytest.mark.parametrize("query", [{"mos_below": "x"}, {"since": "yesterday"}])
def test_bad_filter_values_are_400(api: APIClient, calls: Calls, query: dict[str, str]) -> None:
    assert api.get("/api/v1/calls/", query).status_code == 400
