"""Issue 11, ingest side: hostile or broken input costs one row, or fails one file with a
reason, never the rows around it, the worker's memory or its CPU; and what an older
version stored from such input cannot break the pages that show it."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from cdr import services
from cdr.models import Cdr, CdrFile, Cmr
from cdr.parsing import CucmReader, NotCucmFile, Row, RowError
from cdr.services import cdr_file_ingest
from tests import conftest
from tests.test_parsing import cdr_row, cdr_text, read
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.django_db

GOOD = 2000


def ingest(path: Path, **kwargs: object) -> CdrFile:
    kwargs.setdefault("evaluate_webhooks", False)
    return cdr_file_ingest(path=path, source="replay", **kwargs)  # type: ignore[arg-type]


def good_row(i: int) -> str:
    return ",".join(cdr_row(pkid=f'"p{i}"', dateTimeOrigination=str(1_700_000_000 + i)))


def poisoned(tmp_path: Path, bad: dict[int, str], total: int = GOOD) -> Path:
    """`total` records, where record `i` in `bad` is that line instead of a good one."""
    rows = [bad.get(i) or good_row(i) for i in range(total)]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([]) + ("\n".join(rows) + "\n").encode())
    return path


def line_of(i: int) -> int:
    return i + 3  # after the header and the type line


NUL_ROWS = {
    i: ",".join(cdr_row(pkid=f'"p{i}"', callingPartyNumber='"10\x0001"'))
    for i in (7, 400, 999, 1000, 1777)
}
LONG_PKID = {1234: ",".join(cdr_row(pkid='"' + "a" * 65 + '"'))}
LONG_CLUSTER = {321: ",".join(cdr_row(pkid='"p321"', globalCallId_ClusterID='"' + "c" * 65 + '"'))}
HUGE_EPOCH = {1500: ",".join(cdr_row(pkid='"p1500"', dateTimeOrigination="99999999999999"))}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (NUL_ROWS, "NUL byte in the line"),
        (LONG_PKID, "pkid longer than 64 characters"),
        (LONG_CLUSTER, "globalCallId_ClusterID longer than 64 characters"),
        (
            HUGE_EPOCH,
            "dateTimeOrigination is outside 0…4294967295 epoch seconds "
            "(unsigned 32 bits, as CUCM writes)",
        ),
    ],
    ids=["nul-bytes", "65-character-pkid", "65-character-cluster", "epoch-99999999999999"],
)
def test_a_poisoned_row_is_rejected_alone_and_every_good_row_stored(
    tmp_path: Path, bad: dict[int, str], reason: str
) -> None:
    cdr_file = ingest(poisoned(tmp_path, bad))
    assert cdr_file.status == CdrFile.Status.DONE, cdr_file.error
    assert (cdr_file.stored_count, cdr_file.rejected_count) == (GOOD - len(bad), len(bad))
    assert cdr_file.errors == [{"line": line_of(i), "reason": reason} for i in sorted(bad)]
    assert Cdr.objects.count() == GOOD - len(bad)
    assert not Cdr.objects.filter(line__in=[line_of(i) for i in bad]).exists()


def test_webhooks_fire_once_for_every_good_row_of_a_poisoned_file(
    tmp_path: Path, premium: str
) -> None:
    webhook = Webhook.objects.create(name="all", url="http://192.0.2.1/hook")
    bad = {**NUL_ROWS, **LONG_PKID, **HUGE_EPOCH}
    cdr_file = ingest(poisoned(tmp_path, bad), evaluate_webhooks=True)
    assert cdr_file.stored_count == GOOD - len(bad)
    fired = list(Delivery.objects.filter(webhook=webhook).values_list("cdr_id", flat=True))
    assert sorted(fired) == sorted(Cdr.objects.values_list("id", flat=True))
    webhook.refresh_from_db()
    assert webhook.hit_count == GOOD - len(bad)


@pytest.fixture
def checks_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a 65-character pkid reach the database, as a value no check foresaw would."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores any length in a VARCHAR: it refuses no value")
    monkeypatch.setattr(services, "KEY_LENGTH", 10_000, raising=False)


@pytest.mark.usefixtures("checks_switched_off")
def test_a_row_the_database_refuses_is_rejected_alone_with_its_reason(
    tmp_path: Path, settings: object, premium: str
) -> None:
    settings.CDR_BATCH_SIZE = 500  # type: ignore[attr-defined]
    webhook = Webhook.objects.create(name="all", url="http://192.0.2.1/hook")
    bad = {**LONG_PKID, 1235: LONG_PKID[1234].replace('"aaa', '"bbb')}
    cdr_file = ingest(poisoned(tmp_path, bad), evaluate_webhooks=True)
    assert cdr_file.status == CdrFile.Status.DONE
    assert (cdr_file.stored_count, cdr_file.rejected_count) == (GOOD - 2, 2)
    refused = "refused by the database: value too long for type character varying(64)"
    assert cdr_file.errors == [
        {"line": line_of(1234), "reason": refused},
        {"line": line_of(1235), "reason": refused},
    ]
    assert Cdr.objects.count() == GOOD - 2
    fired = list(Delivery.objects.filter(webhook=webhook).values_list("cdr_id", flat=True))
    assert sorted(fired) == sorted(Cdr.objects.values_list("id", flat=True))


# --- times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("dateTimeOrigination", "-99999999999", False),
        ("dateTimeOrigination", "-1", False),
        ("dateTimeConnect", "4294967296", False),
        ("dateTimeDisconnect", "99999999999999", False),
        ("dateTimeOrigination", "4294967295", True),
        ("dateTimeOrigination", "1745000000", True),
        ("dateTimeConnect", "0", True),
        ("dateTimeConnect", "", True),
        ("dateTimeOrigination", "0001745000000", True),
    ],
)
def test_times_outside_unsigned_32_bit_epoch_seconds_are_rejected(
    column: str, value: str, ok: bool
) -> None:
    _, rows = read(cdr_text([cdr_row(pkid='"p"', **{column: value})]))
    assert isinstance(rows[0], Row) is ok
    if not ok:
        assert rows[0].reason.startswith(f"{column} is outside 0…4294967295 epoch seconds")


def test_a_time_column_typed_as_text_is_still_checked() -> None:
    data = cdr_text([cdr_row(pkid='"p"', dateTimeOrigination='"soon"')])
    names, types, row = data.decode().splitlines()
    types = types.split(",")
    types[4] = "VARCHAR(50)"  # dateTimeOrigination
    _, rows = read(f"{names}\n{','.join(types)}\n{row}\n".encode())
    assert rows == [RowError(3, "dateTimeOrigination is not a time in epoch seconds")]


def test_a_cmr_time_is_checked_too() -> None:
    from cdr.fields import CMR_FIELDS, header

    names = ",".join(f'"{n}"' for n in header("cmr", 48))
    values = ['"p"' if f.name == "pkid" else "0" if f.is_integer else '""' for f in CMR_FIELDS]
    values[[f.name for f in CMR_FIELDS].index("dateTimeStamp")] = "-5"
    _, rows = read(f"{names}\n{','.join(values)}\n".encode())
    assert [type(r) for r in rows] == [RowError]


def test_a_negative_time_is_rejected_at_ingest(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(
        cdr_text(
            [
                cdr_row(pkid='"neg"', dateTimeOrigination="-99999999999"),
                cdr_row(pkid='"ok"', dateTimeOrigination="1745000000"),
            ]
        )
    )
    cdr_file = ingest(path)
    assert (cdr_file.stored_count, cdr_file.rejected_count) == (1, 1)
    assert list(Cdr.objects.values_list("pkid", flat=True)) == ["ok"]


@pytest.fixture
def stored_by_an_older_version(tmp_path: Path) -> int:
    """A CDR whose times an older version stored as read: 1200 BC, and the year 33658."""
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"old"', dateTimeOrigination="1745000000")]))
    ingest(path)
    if connection.vendor == "postgresql":
        low, high = "to_timestamp(-99999999999)", "to_timestamp(999999999999)"
    else:
        low, high = "datetime(-99999999999, 'unixepoch')", "'33658-09-27 01:46:39'"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE cdr_cdr SET origination_at = {low}, connect_at = {high}, disconnect_at = {low}"
        )
    return Cdr.objects.values_list("pk", flat=True).get()


def test_pages_show_a_record_with_an_unstorable_time_without_failing(
    stored_by_an_older_version: int,
) -> None:
    cdr = Cdr.objects.get(pk=stored_by_an_older_version)
    assert (cdr.origination_at, cdr.connect_at, cdr.disconnect_at) == (None, None, None)
    assert cdr.fields["dateTimeOrigination"] == "1745000000"  # the raw line keeps what was read
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(user)
    assert admin.get(reverse("admin:cdr_cdr_changelist")).status_code == 200
    assert admin.get(reverse("admin:cdr_cdr_change", args=[cdr.pk])).status_code == 200
    api = APIClient()
    api.force_authenticate(user)
    listing = api.get("/api/v1/cdrs/")
    assert listing.status_code == 200
    assert listing.data["results"][0]["origination_at"] is None
    detail = api.get(f"/api/v1/cdrs/{cdr.pk}/")
    assert detail.status_code == 200
    assert detail.data["fields"]["pkid"] == "old"


def test_cmr_pages_show_a_record_with_an_unstorable_time_without_failing(
    tmp_path: Path,
) -> None:
    from cdr.fields import CMR_FIELDS, header

    names = ",".join(f'"{n}"' for n in header("cmr", 48))
    values = ['"q"' if f.name == "pkid" else "0" if f.is_integer else '""' for f in CMR_FIELDS]
    path = tmp_path / "cmr_C_01_202001010000_1"
    path.write_bytes(f"{names}\n{','.join(values)}\n".encode())
    assert ingest(path).stored_count == 1
    low = (
        "to_timestamp(-99999999999)"
        if connection.vendor == "postgresql"
        else "datetime(-99999999999, 'unixepoch')"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE cdr_cmr SET stamp_at = {low}")
    cmr = Cmr.objects.get()
    assert cmr.stamp_at is None
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(user)
    assert admin.get(reverse("admin:cdr_cmr_changelist")).status_code == 200
    assert admin.get(reverse("admin:cdr_cmr_change", args=[cmr.pk])).status_code == 200
    api = APIClient()
    api.force_authenticate(user)
    assert api.get("/api/v1/cmrs/").status_code == 200
    assert api.get(f"/api/v1/cmrs/{cmr.pk}/").status_code == 200


# --- gzip bombs, long lines, the size limit ------------------------------------------------

# The peak RSS is the process's own high-water mark (VmHWM): getrusage's ru_maxrss would
# also count the parent's at the exec.
CHILD = """
import json, re, sys, time
import django
django.setup()
from pathlib import Path
from cdr.services import cdr_file_ingest
started = time.monotonic()
record = cdr_file_ingest(path=Path(sys.argv[1]), source="replay", evaluate_webhooks=False)
status = Path("/proc/self/status").read_text()
print(json.dumps({
    "status": record.status, "stored": record.stored_count, "errors": record.errors,
    "error": record.error, "seconds": time.monotonic() - started,
    "peak_rss_mib": int(re.search(r"VmHWM:\\s*(\\d+) kB", status)[1]) / 1024,
}))
"""


def ingest_in_a_child(path: Path, timeout: float = 60) -> dict:
    """Ingest `path` in a fresh interpreter; its outcome, time and peak RSS."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "calltelemetry.settings_test",
        "DATABASE_URL": conftest.test_database_url(),
    }
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=conftest.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def gzip_bomb(path: Path, parts: list[tuple[bytes, int]]) -> Path:
    """A gzip file of `data` repeated `times` for each part, written as one small gzip member
    per MiB repeated (a valid multi-member file): gigabytes in a few hundred KB, at once."""
    with path.open("wb") as out:
        for data, times in parts:
            member = gzip.compress(data, compresslevel=9, mtime=0)
            for _ in range(times):
                out.write(member)
    return path


def rows_text(first: int, count: int) -> bytes:
    return ("\n".join(good_row(i) for i in range(first, first + count)) + "\n").encode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_gzip_bomb_of_one_enormous_line_is_rejected_in_bounded_memory(tmp_path: Path) -> None:
    mib = 1 << 20
    path = gzip_bomb(
        tmp_path / "cdr_C_01_202001010000_1.gz",
        [(cdr_text([]) + rows_text(0, 3), 1), (b"A" * mib, 512), (b"\n" + rows_text(3, 2), 1)],
    )
    assert path.stat().st_size < 2 * mib
    result = ingest_in_a_child(path)
    assert result["peak_rss_mib"] < 300
    assert result["status"] == "done", result["error"]
    assert result["stored"] == 5
    assert result["errors"] == [{"line": 6, "reason": "longer than 65,536 bytes"}]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_gzip_bomb_of_blank_lines_is_skipped_in_bounded_time(tmp_path: Path) -> None:
    mib = 1 << 20
    path = gzip_bomb(
        tmp_path / "cdr_C_01_202001010000_1.gz",
        [(cdr_text([]) + rows_text(0, 3), 1), (b"\n" * mib, 512), (rows_text(3, 2), 1)],
    )
    assert path.stat().st_size < mib
    result = ingest_in_a_child(path)
    assert result["status"] == "done", result["error"]
    assert result["stored"] == 5 and result["errors"] == []
    assert result["seconds"] < 30
    assert result["peak_rss_mib"] < 300
    assert Cdr.objects.get(pkid="p3").line == 2 + 3 + 512 * mib + 1


def test_a_line_over_the_limit_is_rejected_alone(tmp_path: Path, settings: object) -> None:
    settings.CDR_MAX_LINE_BYTES = 4096  # type: ignore[attr-defined]
    long_row = ",".join(cdr_row(pkid='"long"', callingPartyNumber='"' + "9" * 300_000 + '"'))
    path = poisoned(tmp_path, {5: long_row}, total=10)
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.DONE
    assert cdr_file.errors == [{"line": line_of(5), "reason": "longer than 4,096 bytes"}]
    assert sorted(Cdr.objects.values_list("line", flat=True)) == [
        line_of(i) for i in range(10) if i != 5
    ]


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_file_over_the_size_limit_fails_with_the_rows_before_it_stored(
    tmp_path: Path, settings: object, gzipped: bool
) -> None:
    settings.CDR_MAX_FILE_BYTES = 200_000  # type: ignore[attr-defined]
    settings.CDR_BATCH_SIZE = 5000  # type: ignore[attr-defined]
    path = poisoned(tmp_path, {})
    if gzipped:
        path = path.rename(path.with_name(path.name + ".gz"))
        path.write_bytes(gzip.compress(path.read_bytes()))
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.FAILED
    assert "the file is larger than the limit of 200,000 bytes uncompressed" in cdr_file.error
    stored = Cdr.objects.count()
    assert stored > 100 and cdr_file.stored_count == stored
    assert f"after line {stored + 2}; {stored} records stored" in cdr_file.error


def test_a_file_of_junk_lines_stops_after_the_rejected_rows_limit(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([]) + rows_text(0, 3) + b"x\n" * 300_000 + rows_text(3, 2))
    started = time.monotonic()
    cdr_file = ingest(path)
    assert time.monotonic() - started < 10
    assert cdr_file.status == CdrFile.Status.FAILED
    assert cdr_file.error.startswith("more than 100,000 rows rejected: not read further, after")
    assert cdr_file.stored_count == 3
    assert 100_000 < cdr_file.rejected_count < 110_000
    assert len(cdr_file.errors) == 1000


def test_blank_lines_anywhere_keep_the_line_numbers_right() -> None:
    blank_runs = b"\n" * 5000 + b"  \t\n" + b"\r\n" * 3
    data = cdr_text([]) + blank_runs + rows_text(0, 1) + blank_runs * 40 + rows_text(1, 1)
    _, rows = read(data)
    run = blank_runs.count(b"\n")
    assert [(r.line, r.values[50]) for r in rows] == [  # type: ignore[union-attr]
        (3 + run, "p0"),
        (3 + run + 1 + run * 40, "p1"),
    ]


# --- a truncated gzip file ------------------------------------------------------------------


def test_a_truncated_gzip_stores_every_complete_row_before_the_cut(
    tmp_path: Path, settings: object
) -> None:
    settings.CDR_BATCH_SIZE = 5000  # type: ignore[attr-defined]
    whole = gzip.compress(poisoned(tmp_path, {}).read_bytes())
    path = tmp_path / "cdr_C_01_202001010000_2.gz"
    path.write_bytes(whole[: len(whole) * 3 // 5])
    readable = zlib_readable(path.read_bytes())
    complete = readable.count(b"\n") - 2
    assert 500 < complete < GOOD
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.FAILED
    assert cdr_file.error.startswith("corrupt or truncated gzip file (")
    assert f"after line {complete + 2}; {complete} records stored" in cdr_file.error
    assert cdr_file.stored_count == complete == Cdr.objects.count()
    cut_off = readable.rsplit(b"\n", 1)[1]
    if cut_off:
        assert cdr_file.errors == [
            {"line": complete + 3, "reason": "cut off: the file ends in the middle of this line"}
        ]


def zlib_readable(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


# --- file names -------------------------------------------------------------------------------


@pytest.fixture
def staff_api(db: None, settings: object, tmp_path: Path) -> APIClient:
    settings.CDR_INCOMING_DIR = tmp_path / "incoming"  # type: ignore[attr-defined]
    api = APIClient()
    api.force_authenticate(User.objects.create_user("ops", is_staff=True))
    return api


def test_an_upload_with_a_very_long_name_is_refused_with_a_reason(staff_api: APIClient) -> None:
    name = "cdr_" + "x" * 240 + "_01_202001010000_1"
    upload = SimpleUploadedFile(name, cdr_text([cdr_row(pkid='"p"')]))
    response = staff_api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    # Django's multipart parser has already cut the name to 255 characters.
    assert response.data["file"] == [
        "The file name is 255 bytes long; at most 200 are accepted. Rename the file."
    ]
    assert not CdrFile.objects.exists()


def test_an_upload_name_of_200_bytes_is_accepted(staff_api: APIClient) -> None:
    name = "cdr_" + "é" * 89 + "_01_202001010000_1"  # 2 bytes a character
    assert len(name.encode()) == 200
    upload = SimpleUploadedFile(name, cdr_text([cdr_row(pkid='"p"')]))
    response = staff_api.post("/api/v1/cdr-files/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.data
    assert CdrFile.objects.get().name == name


def test_a_name_longer_than_the_record_holds_is_shortened_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"p"')]))
    name = "cdr_" + "c" * 300 + "_01_202001010000_7"
    cdr_file = ingest(path, name=name)
    assert cdr_file.status == CdrFile.Status.DONE
    stored = CdrFile.objects.get().name
    assert stored == name[:127] + "…" + name[-127:] and len(stored) == 255
    assert cdr_file.cluster == "c" * 64  # cut to its column, as records' default cluster is


# --- what error messages show ---------------------------------------------------------------

SHADOW = b"root:$6$Qw3rTy$hUnTeR2hashhashhash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_a_file_that_is_not_cucm_shows_none_of_its_content(tmp_path: Path) -> None:
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(SHADOW)
    cdr_file = ingest(path)
    assert cdr_file.status == CdrFile.Status.FAILED
    assert cdr_file.error == (
        "not a CUCM CDR/CMR file: line 1 must name the fields (cdrRecordType, …, pkid, "
        "dateTimeOrigination or dateTimeStamp); found 1 field(s), 0 of them CUCM field names"
    )


def test_a_header_names_only_known_cucm_fields() -> None:
    with pytest.raises(NotCucmFile) as raised:
        CucmReader(io.BytesIO(b'"cdrRecordType","secret-column","duration","pkid"\n'))
    assert str(raised.value).endswith(
        "found 4 field(s), 3 of them CUCM field names (cdrRecordType, duration, pkid)"
    )


def test_a_bad_value_is_not_echoed_in_its_reason() -> None:
    _, rows = read(cdr_text([cdr_row(pkid='"p"', duration="hunter2")]))
    assert rows == [RowError(3, "non-integer value in INTEGER column duration")]


def test_eight_million_blank_lines_are_skipped_in_moments() -> None:
    started = time.monotonic()
    _, rows = read(cdr_text([]) + b"\n" * (8 << 20) + rows_text(0, 1))
    assert len(rows) == 1 and time.monotonic() - started < 5
