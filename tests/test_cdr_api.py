from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cdr.dropfolder import Folders
from cdr.models import Cdr, CdrFile, Cmr
from cdr.services import cdr_file_ingest
from tests.test_parsing import EXPECTED

CDR_133 = "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1"
CMR_48 = "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1"
CDR_129_BUSY = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260936_476745"
CDR_118 = "cucm-2015-damhau/cdr_StandAloneCluster_02_201510091036_254831"

ENDPOINTS = ["/api/v1/cdr-files/", "/api/v1/cdrs/", "/api/v1/cmrs/"]


@pytest.fixture
def all_samples(db: None, samples: Path) -> dict[str, CdrFile]:
    return {
        relative: cdr_file_ingest(path=samples / relative, source="replay", evaluate_webhooks=False)
        for relative in EXPECTED
    }


def ids(response: object) -> set[int]:
    return {row["id"] for row in response.data["results"]}  # type: ignore[attr-defined]


# --- authentication and permissions -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", [*ENDPOINTS, "/api/v1/cdrs/1/", "/api/v1/cmrs/1/"])
def test_every_endpoint_needs_credentials(url: str) -> None:
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_upload_without_credentials_is_401() -> None:
    upload = SimpleUploadedFile("cdr_x_01_202001010000_1", b"x")
    response = APIClient().post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 401
    assert CdrFile.objects.count() == 0


def test_a_token_authenticates(user: User, all_samples: dict[str, CdrFile]) -> None:
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/v1/cdrs/")
    assert response.status_code == 200
    assert response.data["count"] == 24
    client.credentials(HTTP_AUTHORIZATION="Token not-a-key")
    assert client.get("/api/v1/cdrs/").status_code == 401


def test_a_non_staff_user_cannot_upload(api: APIClient, samples: Path, settings: object) -> None:
    settings.CDR_INCOMING_DIR = samples.parent / "never-written"  # type: ignore[attr-defined]
    upload = SimpleUploadedFile("cdr_x_01_202001010000_1", (samples / CDR_133).read_bytes())
    response = api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 403
    assert CdrFile.objects.count() == 0


@pytest.mark.parametrize("url", ["/api/v1/cdrs/", "/api/v1/cmrs/"])
def test_records_are_read_only(staff_api: APIClient, url: str) -> None:
    assert staff_api.post(url, {}, format="json").status_code == 405


# --- ingest records -------------------------------------------------------------------------


def test_ingest_records_list_and_detail(api: APIClient, all_samples: dict[str, CdrFile]) -> None:
    response = api.get("/api/v1/cdr-files/")
    assert response.status_code == 200
    assert response.data["count"] == 10
    record = all_samples[CDR_133]
    detail = api.get(f"/api/v1/cdr-files/{record.pk}/").data
    assert detail["name"] == "cdr_cucmOHSUtest_02_202504181632_1"
    assert detail["status"] == "done"
    assert detail["kind"] == "cdr"
    assert detail["cluster"] == "cucmOHSUtest"
    assert detail["source"] == "replay"
    assert detail["sha256"] == "91b610150d6f1910fc14ad90d32d07364904d85939a41340bac94d055f42270f"
    assert (detail["stored_count"], detail["duplicate_count"], detail["rejected_count"]) == (
        3,
        0,
        0,
    )
    assert detail["errors"] == []
    assert "path" not in detail and "lease_until" not in detail and "attempts" not in detail


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("kind=cdr", 5),
        ("kind=cmr", 5),
        ("cluster=cucmOHSUtest", 2),
        ("cluster=StandAloneCluster&kind=cmr", 4),
        ("status=done", 10),
        ("status=failed", 0),
        ("source=replay", 10),
        ("source=upload", 0),
        ("created_after=2000-01-01T00:00:00Z", 10),
        ("created_before=2000-01-01T00:00:00Z", 0),
    ],
)
def test_ingest_record_filters(
    api: APIClient, all_samples: dict[str, CdrFile], query: str, count: int
) -> None:
    response = api.get(f"/api/v1/cdr-files/?{query}")
    assert response.status_code == 200, response.data
    assert response.data["count"] == count


def test_a_failed_ingest_shows_its_reason(api: APIClient, tmp_path: Path) -> None:
    junk = tmp_path / "cdr_x_01_202001010000_1"
    junk.write_bytes(b"name,age\nann,3\n")
    record = cdr_file_ingest(path=junk, source="replay", evaluate_webhooks=False)
    detail = api.get(f"/api/v1/cdr-files/{record.pk}/").data
    assert detail["status"] == "failed"
    assert detail["error"].startswith("not a CUCM CDR/CMR file")


def test_rejected_rows_are_listed_with_line_numbers(
    api: APIClient, samples: Path, tmp_path: Path
) -> None:
    lines = (samples / CDR_133).read_bytes().split(b"\n")
    broken = tmp_path / "cdr_cucmOHSUtest_02_202504181633_2"
    broken.write_bytes(b"\n".join([*lines[:3], b'"only","three","fields"', *lines[3:]]))
    record = cdr_file_ingest(path=broken, source="replay", evaluate_webhooks=False)
    detail = api.get(f"/api/v1/cdr-files/{record.pk}/").data
    assert (detail["stored_count"], detail["rejected_count"]) == (3, 1)
    assert detail["errors"] == [{"line": 4, "reason": "3 fields, expected 133"}]


# --- CDRs -----------------------------------------------------------------------------------


def test_cdr_list_rows_are_typed_and_decoded(api: APIClient, all_samples: dict) -> None:
    response = api.get("/api/v1/cdrs/?call_id=25447")
    assert response.data["count"] == 1
    row = response.data["results"][0]
    assert row["origination_at"] == "2025-04-18T16:32:08Z"
    assert row["connect_at"] == "2025-04-18T16:32:10Z"
    assert row["duration"] == 11
    assert row["answered"] is True
    assert row["calling_party_number"] == "5033466594"
    assert row["final_called_party_number"] == "5033466593"
    assert row["orig_ip"] == "10.248.64.14"
    assert row["orig_cause_value"] == 16
    assert row["orig_cause_text"] == "Normal call clearing"
    assert row["dest_cause_text"] == "No error"
    assert row["file"] == all_samples[CDR_133].pk
    assert "fields" not in row


def test_cdr_pagination_has_a_count(api: APIClient, all_samples: dict) -> None:
    first = api.get("/api/v1/cdrs/").data
    assert first["count"] == 24
    assert len(first["results"]) == 24 and first["next"] is None
    assert api.get("/api/v1/cdrs/?page=2").status_code == 404


@pytest.mark.parametrize(("relative", "width"), [(CDR_133, 133), (CDR_129_BUSY, 129)])
def test_cdr_detail_has_every_field_by_header_name(
    api: APIClient, all_samples: dict[str, CdrFile], relative: str, width: int
) -> None:
    record = Cdr.objects.filter(file=all_samples[relative]).first()
    detail = api.get(f"/api/v1/cdrs/{record.pk}/").data
    assert len(detail["fields"]) == width
    assert detail["fields"]["pkid"] == record.pkid
    assert detail["fields"]["globalCallID_callId"] == str(record.call_id)


def test_cdr_detail_of_the_118_field_generation(
    api: APIClient, all_samples: dict[str, CdrFile]
) -> None:
    record = Cdr.objects.get(pkid="d79df41d-c4b2-49be-a2c3-3ec78db28a45")
    detail = api.get(f"/api/v1/cdrs/{record.pk}/").data
    assert len(detail["fields"]) == 118
    assert detail["fields"]["duration"] == "3974"
    assert detail["duration"] == 3974
    assert detail["last_redirect_dn"] == "132465"


def test_the_busy_cause_is_decoded(api: APIClient, all_samples: dict) -> None:
    rows = api.get("/api/v1/cdrs/?cause=17").data["results"]
    assert len(rows) == 3
    assert {r["dest_cause_text"] for r in rows} == {"User busy"}
    assert {r["answered"] for r in rows} == {False}


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("since=2020-12-26T09:34:00Z&until=2020-12-26T09:36:00Z", 4),
        ("since=2025-01-01T00:00:00Z", 3),
        ("until=2016-01-01T00:00:00Z", 3),
        ("cluster=cucmOHSUtest", 3),
        ("cluster=StandAloneCluster", 21),
        ("calling_party_number=8486", 12),
        ("original_called_party_number=7203", 3),
        ("final_called_party_number=132456", 1),
        ("last_redirect_dn=132465", 1),
        ("number=5033466593", 1),
        ("number=5030079981", 2),
        ("number=132465", 1),
        ("number=123456", 3),
        ("number=7203", 4),
        ("device=SIP_TO_SYZEFXIS", 6),
        ("device=SEPCC8E7148AD29", 2),
        ("cause=1459617833", 2),
        ("cause=1", 1),
        ("cause=16", 18),
        ("call_id=8534716", 1),
        ("call_manager_id=2", 24),
        ("pkid=e4c90b4c-7c89-4c11-b06a-1ea5bd0c2855", 1),
        ("answered=true", 7),
        ("answered=false", 17),
        ("min_duration=20", 6),
        ("max_duration=11", 18),
        ("min_duration=20&max_duration=56", 4),
        ("device=SEPF029295B608D&answered=false", 12),
    ],
)
def test_cdr_filters(api: APIClient, all_samples: dict, query: str, count: int) -> None:
    response = api.get(f"/api/v1/cdrs/?{query}")
    assert response.status_code == 200, response.data
    assert response.data["count"] == count


def test_cdr_filter_by_file(api: APIClient, all_samples: dict[str, CdrFile]) -> None:
    record = all_samples[CDR_129_BUSY]
    response = api.get(f"/api/v1/cdrs/?file={record.pk}")
    assert ids(response) == set(Cdr.objects.filter(file=record).values_list("pk", flat=True))
    assert response.data["count"] == 5


@pytest.mark.parametrize("query", ["since=yesterday", "cause=busy", "file=x", "min_duration=long"])
def test_bad_filter_values_are_400(api: APIClient, query: str) -> None:
    assert api.get(f"/api/v1/cdrs/?{query}").status_code == 400


def test_listing_does_not_query_per_row(
    api: APIClient, all_samples: dict, django_assert_max_num_queries: object
) -> None:
    with django_assert_max_num_queries(4):  # type: ignore[operator]
        assert len(api.get("/api/v1/cdrs/").data["results"]) == 24
    with django_assert_max_num_queries(4):  # type: ignore[operator]
        assert len(api.get("/api/v1/cmrs/").data["results"]) == 17


# --- CMRs -----------------------------------------------------------------------------------


def test_cmr_detail_has_fields_and_vq_metrics(
    api: APIClient, all_samples: dict[str, CdrFile]
) -> None:
    cmr = Cmr.objects.get(pkid="60e07196-5c4f-407d-8c0b-01c8ebf8e164")
    detail = api.get(f"/api/v1/cmrs/{cmr.pk}/").data
    assert len(detail["fields"]) == 48
    assert detail["directory_num"] == "5033466594"
    assert detail["stamp_at"] == "2025-04-18T16:32:21Z"
    assert detail["vq_metrics"]["VoRxCodec"] == "G.711 u-la"
    assert detail["vq_metrics"]["maxJitter"] == "0"
    row = api.get("/api/v1/cmrs/?pkid=60e07196-5c4f-407d-8c0b-01c8ebf8e164").data["results"][0]
    assert "fields" not in row and "vq_metrics" not in row


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("cluster=StandAloneCluster", 15),
        ("directory_num=8850", 3),
        ("directory_num=1234556", 6),
        ("device_name=SEP007E9579F737", 2),
        ("call_identifier=47119754", 2),
        ("call_id=8534789", 3),
        ("since=2020-12-26T06:40:00Z&until=2020-12-26T07:00:00Z", 3),
        ("until=2016-01-01T00:00:00Z", 6),
        ("pkid=e4b3f091-03ad-4af0-80e6-b6b09e28197c", 1),
    ],
)
def test_cmr_filters(api: APIClient, all_samples: dict, query: str, count: int) -> None:
    response = api.get(f"/api/v1/cmrs/?{query}")
    assert response.status_code == 200, response.data
    assert response.data["count"] == count


# --- upload ---------------------------------------------------------------------------------


@pytest.fixture
def incoming(settings: object, tmp_path: Path) -> Path:
    settings.CDR_INCOMING_DIR = tmp_path / "incoming"  # type: ignore[attr-defined]
    return settings.CDR_INCOMING_DIR  # type: ignore[attr-defined]


def test_an_upload_is_queued_and_answered_202(
    staff_api: APIClient,
    samples: Path,
    incoming: Path,
    django_capture_on_commit_callbacks: object,
) -> None:
    upload = SimpleUploadedFile(Path(CDR_133).name, (samples / CDR_133).read_bytes())
    with django_capture_on_commit_callbacks() as callbacks:  # type: ignore[operator]
        response = staff_api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.data
    assert response.data["status"] == "queued"
    assert response.data["source"] == "upload"
    assert response.data["name"] == "cdr_cucmOHSUtest_02_202504181632_1"
    record = CdrFile.objects.get()
    assert response.headers["Location"] == f"http://testserver/api/v1/cdr-files/{record.pk}/"
    queued = Path(record.path)
    assert queued.parent == Folders.current().queue
    assert queued.name.endswith("__cdr_cucmOHSUtest_02_202504181632_1")
    assert queued.read_bytes() == (samples / CDR_133).read_bytes()
    assert len(callbacks) == 1  # the ingest task is sent only once the record is committed


def test_an_empty_upload_is_refused(staff_api: APIClient, incoming: Path) -> None:
    upload = SimpleUploadedFile("cdr_x_01_202001010000_1", b"")
    response = staff_api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert "empty" in str(response.data["file"][0])
    assert CdrFile.objects.count() == 0


def test_an_upload_without_a_file_is_refused(staff_api: APIClient, incoming: Path) -> None:
    response = staff_api.post("/api/v1/cdr-files/", {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.data


def test_a_json_body_is_refused(staff_api: APIClient, incoming: Path) -> None:
    response = staff_api.post("/api/v1/cdr-files/", {"file": "x"}, format="json")
    assert response.status_code == 415


def test_an_upload_name_is_stripped_of_any_path(
    staff_api: APIClient, samples: Path, incoming: Path
) -> None:
    # Django strips any directory part from multipart file names before we see them.
    upload = SimpleUploadedFile("../../cdr_x_01_202001010000_1", (samples / CDR_133).read_bytes())
    response = staff_api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 202
    record = CdrFile.objects.get()
    assert record.name == "cdr_x_01_202001010000_1"
    assert Path(record.path).parent == Folders.current().queue


def poll(client: APIClient, url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).data
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"still {body['status']} after {timeout}s: {body}")


@pytest.mark.slow
def test_an_uploaded_file_is_ingested_by_a_worker(
    start_worker: object, samples: Path, transactional_db: None
) -> None:
    staff = User.objects.create_user("operator", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    start_worker(queues="ingest")  # type: ignore[operator]
    upload = SimpleUploadedFile(Path(CDR_129_BUSY).name, (samples / CDR_129_BUSY).read_bytes())
    response = client.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 202
    body = poll(client, response.headers["Location"])
    assert body["status"] == "done", body
    assert (body["stored_count"], body["duplicate_count"], body["rejected_count"]) == (5, 0, 0)
    assert body["kind"] == "cdr" and body["cluster"] == "StandAloneCluster"
    assert body["started_at"] and body["finished_at"]
    assert client.get(f"/api/v1/cdrs/?file={body['id']}").data["count"] == 5
    processed = Folders.current().processed / Path(CDR_129_BUSY).name
    assert processed.read_bytes() == (samples / CDR_129_BUSY).read_bytes()


@pytest.mark.slow
def test_an_uploaded_non_cucm_file_fails_with_a_reason(
    start_worker: object, transactional_db: None
) -> None:
    staff = User.objects.create_user("operator", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    start_worker(queues="ingest")  # type: ignore[operator]
    upload = SimpleUploadedFile("report.csv", b"date,amount\n2024-01-01,3\n")
    response = client.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 202
    body = poll(client, response.headers["Location"])
    assert body["status"] == "failed"
    assert body["error"].startswith("not a CUCM CDR/CMR file: line 1 must name the fields")
    assert body["stored_count"] == 0
    failed = Folders.current().failed
    assert (failed / "report.csv.error").read_text().startswith("not a CUCM CDR/CMR file")


@pytest.mark.parametrize("path", ["/api/v1/cdr-files/", "/api/v1/cdrs/", "/api/v1/deliveries/"])
def test_a_time_filter_with_an_offset_postgresql_cannot_store_is_not_a_500(
    path: str, admin_user: User
) -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    key = "created_before" if path.endswith("cdr-files/") else "until"
    response = client.get(path, {key: "6278-04-11T20:35:31.6-23:02"})
    assert response.status_code == 200
