from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection, connections

from cdr.models import Cdr, CdrFile, Cmr
from cdr.services import cdr_file_ingest
from tests.test_parsing import EXPECTED, cdr_row, cdr_text
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.django_db


def ingest(path: Path, **kwargs: object) -> CdrFile:
    return cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False, **kwargs)


def test_every_sample_is_stored_with_exact_counts(samples: Path) -> None:
    for relative, (kind, _, records) in EXPECTED.items():
        cdr_file = ingest(samples / relative)
        assert cdr_file.status == CdrFile.Status.DONE, (relative, cdr_file.error)
        assert cdr_file.kind == kind
        assert (cdr_file.stored_count, cdr_file.duplicate_count, cdr_file.rejected_count) == (
            records,
            0,
            0,
        )
        assert len(cdr_file.sha256) == 64 and cdr_file.size == (samples / relative).stat().st_size
    assert Cdr.objects.count() == 3 + 6 + 7 + 5 + 3
    assert Cmr.objects.count() == 6 + 3 + 3 + 3 + 2


def test_typed_columns_and_all_fields_by_header_name(samples: Path) -> None:
    ingest(samples / "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1")
    call = Cdr.objects.get(line=5)
    assert call.cluster == "cucmOHSUtest"
    assert call.origination_at == datetime(2025, 4, 18, 16, 32, 8, tzinfo=UTC)
    assert call.connect_at == datetime(2025, 4, 18, 16, 32, 10, tzinfo=UTC)
    assert call.duration == 11
    assert call.orig_ip == "10.248.64.14"
    assert len(call.fields) == 133
    assert call.fields["pkid"] == call.pkid
    recording = Cdr.objects.get(line=3)
    assert recording.dest_cause_value == 1459617833
    assert recording.dest_cause_text == "SIP 503 Service Unavailable"


def test_cmr_typed_columns(samples: Path) -> None:
    ingest(samples / "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1")
    cmr = Cmr.objects.order_by("line").first()
    assert cmr.directory_num == "5033466594"
    assert cmr.call_identifier == 47874239
    assert cmr.vq_metrics["VoRxCodec"] == "G.711 u-la"


def test_the_same_file_again_is_a_duplicate_and_stores_nothing(samples: Path) -> None:
    path = samples / "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630"
    first = ingest(path)
    again = ingest(path)
    assert again.status == CdrFile.Status.DUPLICATE
    assert f"same content as {first.name}" in again.error
    assert Cdr.objects.count() == 6


def test_records_already_stored_are_counted_duplicate(tmp_path: Path) -> None:
    one = tmp_path / "cdr_C_01_202001010000_1"
    one.write_bytes(cdr_text([cdr_row(pkid='"a"'), cdr_row(pkid='"b"')]))
    two = tmp_path / "cdr_C_01_202001010001_2"
    two.write_bytes(cdr_text([cdr_row(pkid='"b"'), cdr_row(pkid='"c"'), cdr_row(pkid='"c"')]))
    ingest(one)
    second = ingest(two)
    assert (second.stored_count, second.duplicate_count) == (1, 2)
    assert sorted(Cdr.objects.values_list("pkid", flat=True)) == ["a", "b", "c"]


def test_the_same_pkid_in_two_clusters_is_two_records(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(
        cdr_text(
            [
                cdr_row(pkid='"a"', globalCallId_ClusterID='"east"'),
                cdr_row(pkid='"a"', globalCallId_ClusterID='"west"'),
            ]
        )
    )
    assert ingest(path).stored_count == 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\x1f\x8b\x08\x00junk", "gzip"),
        (b"\x00\x01\x02binary\xff", "binary data"),
        (b"name,email\nbob,bob@example.com\n", "not a CUCM CDR/CMR file"),
    ],
)
def test_a_file_that_is_not_cucm_fails_with_a_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(content)
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.FAILED
    assert reason in cdr_file.error.lower() or reason in cdr_file.error


def test_header_only_is_done_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([]))
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.DONE
    assert cdr_file.error == "the file has a header but no records"


def test_bad_rows_are_rejected_and_good_rows_stored(tmp_path: Path) -> None:
    rows = [
        cdr_row(pkid='"ok1"'),
        cdr_row(pkid='"bad"', duration="x"),
        cdr_row(pkid='"ok2"')[:20],
        cdr_row(pkid='""'),
        cdr_row(pkid='"ok3"'),
    ]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text(rows) + b'"\xff\xfe\n')
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.DONE
    assert (cdr_file.stored_count, cdr_file.rejected_count) == (2, 4)
    assert [e["line"] for e in cdr_file.errors] == [4, 5, 6, 8]
    assert cdr_file.errors[0]["reason"] == "non-integer value in INTEGER column duration"
    assert cdr_file.errors[2]["reason"] == "empty pkid"
    assert set(Cdr.objects.values_list("pkid", flat=True)) == {"ok1", "ok3"}


def test_batches_commit_independently(tmp_path: Path, settings: object) -> None:
    settings.CDR_BATCH_SIZE = 2  # type: ignore[attr-defined]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(7)]))
    assert ingest(path).stored_count == 7


def test_backslashes_tabs_and_quotes_are_stored_exactly(tmp_path: Path) -> None:
    odd = '"a\\b\\N\tc ""quoted"", d"'
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(
        cdr_text([cdr_row(pkid='"odd"', callingPartyNumber=odd), cdr_row(pkid='"plain"')])
    )
    assert ingest(path).stored_count == 2
    cdr = Cdr.objects.get(pkid="odd")
    assert cdr.calling_party_number == 'a\\b\\N\tc "quoted", d'
    assert cdr.fields["callingPartyNumber"] == cdr.calling_party_number
    assert cdr.raw == ",".join(cdr_row(pkid='"odd"', callingPartyNumber=odd))


def test_a_number_too_big_for_its_column_stays_in_the_raw_line(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    huge, past_int32 = "9" * 25, "4294967296"
    path.write_bytes(
        cdr_text([cdr_row(pkid='"big"', origLegCallIdentifier=huge, duration=past_int32)])
    )
    assert ingest(path).stored_count == 1
    cdr = Cdr.objects.get()
    assert (cdr.orig_leg_id, cdr.duration) == (None, None)
    assert (cdr.fields["origLegCallIdentifier"], cdr.fields["duration"]) == (huge, past_int32)


def test_the_session_flushes_commits_again_after_an_ingest(tmp_path: Path) -> None:
    """Batch commits skip the WAL flush; the ingest record's final commit must not."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(3)]))
    assert ingest(path).stored_count == 3
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_a_database_error_mid_file_stops_the_reading_thread(
    tmp_path: Path, settings: object
) -> None:
    settings.CDR_BATCH_SIZE = 2  # type: ignore[attr-defined]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(50)]))
    inserts = []

    def fail_second_batch(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if sql.startswith("INSERT INTO") and '"cdr_cdr"' in sql:
            inserts.append(sql)
            if len(inserts) == 2:
                raise RuntimeError("the database went away")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_second_batch), pytest.raises(RuntimeError):
        ingest(path)
    assert Cdr.objects.count() == 2  # the first batch committed
    assert not [t for t in threading.enumerate() if t.name == "cdr-read-ahead"]


@pytest.mark.django_db(transaction=True)
def test_two_ingests_of_one_file_at_once_store_each_record_once(
    tmp_path: Path, settings: object
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL; SQLite serialises them")
    settings.CDR_BATCH_SIZE = 50  # type: ignore[attr-defined]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(2000)]))
    copy = tmp_path / "cdr_C_01_202001010000_1.copy"
    shutil.copy(path, copy)
    webhook = Webhook.objects.create(name="every record", url="http://192.0.2.1/hook")
    results: list[CdrFile] = []
    barrier = threading.Barrier(2)

    def run(p: Path) -> None:
        try:
            barrier.wait()
            # Production's firing path: the batch's deliveries in the statement that stores it.
            results.append(cdr_file_ingest(path=p, source="replay", name=path.name))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(p,)) for p in (path, copy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Cdr.objects.count() == 2000
    stored = sum(r.stored_count for r in results if r.status == CdrFile.Status.DONE)
    assert stored == 2000
    # Both ingests locked the webhook in turn: every new record fired once, none twice.
    assert Delivery.objects.count() == 2000
    webhook.refresh_from_db()
    assert webhook.hit_count == 2000
