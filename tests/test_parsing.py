from __future__ import annotations

import gzip
import io
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdr.fields import CDR_FIELDS, header
from cdr.parsing import (
    CucmReader,
    NotCucmFile,
    Row,
    RowError,
    int_to_ipv4,
    open_binary,
    parse_file_name,
    parse_vq_metrics,
)

EXPECTED = {
    # sample file: (kind, fields, records)
    "cucm-2015-damhau/cdr_StandAloneCluster_02_201510091036_254831": ("cdr", 118, 3),
    "cucm-2015-damhau/cmr_StandAloneCluster_02_201510091036_254831": ("cmr", 19, 6),
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630": ("cdr", 129, 6),
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260558_476631": ("cdr", 129, 7),
    "cucm12-panos1962/cdr_StandAloneCluster_02_202012260936_476745": ("cdr", 129, 5),
    "cucm12-panos1962/cmr_StandAloneCluster_02_202012260632_476659": ("cmr", 44, 3),
    "cucm12-panos1962/cmr_StandAloneCluster_02_202012260642_476662": ("cmr", 44, 3),
    "cucm12-panos1962/cmr_StandAloneCluster_02_202012260844_476716": ("cmr", 44, 3),
    "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1": ("cdr", 133, 3),
    "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1": ("cmr", 48, 2),
}


def read(data: bytes) -> tuple[CucmReader, list[Row | RowError]]:
    reader = CucmReader(io.BytesIO(data))
    return reader, list(reader)


def cdr_text(rows: list[list[str]], count: int = 133) -> bytes:
    names = header("cdr", count)
    lines = [",".join(f'"{n}"' for n in names), ",".join(f.type for f in CDR_FIELDS[:count])]
    lines += [",".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def cdr_row(count: int = 133, **values: str) -> list[str]:
    row = []
    for spec in CDR_FIELDS[:count]:
        if spec.name in values:
            row.append(values[spec.name])
        elif spec.is_integer:
            row.append("0")
        else:
            row.append('""')
    return row


def by_name(reader: CucmReader, values: list[str]) -> dict[str, str]:
    return dict(zip(reader.layout.names, values, strict=False))


def test_every_sample_generation_parses_with_exact_counts(samples: Path) -> None:
    for relative, (kind, fields, records) in EXPECTED.items():
        reader = CucmReader(open_binary(samples / relative))
        rows = list(reader)
        assert reader.layout.kind == kind, relative
        assert len(reader.layout.names) == fields, relative
        assert [r for r in rows if isinstance(r, RowError)] == [], relative
        assert len(rows) == records, relative


def test_sample_values_decode(samples: Path) -> None:
    reader = CucmReader(
        open_binary(samples / "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1")
    )
    rows = [by_name(reader, r.values) for r in reader if isinstance(r, Row)]
    call = rows[2]
    assert datetime.fromtimestamp(int(call["dateTimeOrigination"]), tz=UTC) == datetime(
        2025, 4, 18, 16, 32, 8, tzinfo=UTC
    )
    assert call["duration"] == "11"
    assert int_to_ipv4(call["origIpAddr"]) == call["origIpv4v6Addr"] == "10.248.64.14"
    assert rows[0]["destCause_value"] == "1459617833"  # beyond int32


def test_unquoted_sanitized_header_and_missing_quotes_parse(samples: Path) -> None:
    reader = CucmReader(
        open_binary(samples / "cucm-2015-damhau/cmr_StandAloneCluster_02_201510091036_254831")
    )
    rows = [by_name(reader, r.values) for r in reader if isinstance(r, Row)]
    assert rows[0]["deviceName"] == "S0/SU0/DS1-0/30"
    assert rows[0]["varVQMetrics"] == ""
    assert parse_vq_metrics(rows[1]["varVQMetrics"])["MLQK"]


def test_empty_integer_columns_in_cmr_are_accepted(samples: Path) -> None:
    reader = CucmReader(
        open_binary(samples / "cucm12-panos1962/cmr_StandAloneCluster_02_202012260844_476716")
    )
    durations = [by_name(reader, r.values)["duration"] for r in reader if isinstance(r, Row)]
    assert "" in durations


def test_ipv4_integers_are_signed_little_endian() -> None:
    assert int_to_ipv4(1048291520) == "192.168.123.62"
    assert int_to_ipv4("-1139627840") == "192.168.18.188"
    assert int_to_ipv4("-2013151478") == "10.191.1.136"
    assert int_to_ipv4("0") is None


def test_vq_metrics_both_separators() -> None:
    modern = "CCR=0.0011;ICR=0.0000;Ver=0.90;VoRxCodec=G.711 u-la;CID=4"
    assert parse_vq_metrics(modern) == {
        "CCR": "0.0011",
        "ICR": "0.0000",
        "Ver": "0.90",
        "VoRxCodec": "G.711 u-la",
        "CID": "4",
    }
    assert parse_vq_metrics("MLQK=4.5000, MLQKav=4.4965") == {"MLQK": "4.5000", "MLQKav": "4.4965"}
    assert parse_vq_metrics("") == {}


def test_gzip_crlf_bom_quoted_commas_doubled_quotes(tmp_path: Path) -> None:
    row = cdr_row(
        pkid='"a1"',
        comment='"ConfControllerDn=1000,x;say ""hi"""',
        duration="4294967295",
    )
    text = b"\xef\xbb\xbf" + cdr_text([row]).replace(b"\n", b"\r\n")
    path = tmp_path / "cdr_C_01_202001010000_1.gz"
    path.write_bytes(gzip.compress(text))
    reader = CucmReader(open_binary(path))
    (parsed,) = list(reader)
    values = by_name(reader, parsed.values)
    assert reader.layout.names[0] == "cdrRecordType"
    assert values["comment"] == 'ConfControllerDn=1000,x;say "hi"'
    assert values["duration"] == "4294967295"
    assert values["pkid"] == "a1"


def test_unknown_extra_columns_are_kept_and_names_canonicalised() -> None:
    names = ",".join(f'"{n.upper() if n == "pkid" else n}"' for n in header("cdr", 129))
    data = f'{names},"futureField"\n'.encode()
    data += (",".join(cdr_row(129, pkid='"p"')) + ',"hello"\n').encode()
    reader, rows = read(data)
    assert reader.layout.unknown == ["futureField"]
    assert "pkid" in reader.layout.index
    assert not reader.layout.has_type_line
    assert by_name(reader, rows[0].values)["futureField"] == "hello"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\n\n", "empty file"),
        (b"\x00\x01\x02\xff\xfe binary", "binary data"),
        (b"name,email\nbob,bob@example.com\n", "not a CUCM CDR/CMR file"),
        (b'"a\n', "line 1 is not a CSV header"),
    ],
)
def test_not_a_cucm_file(data: bytes, reason: str) -> None:
    with pytest.raises(NotCucmFile, match=reason):
        CucmReader(io.BytesIO(data))


def test_header_only_has_no_rows() -> None:
    reader, rows = read(cdr_text([]))
    assert rows == [] and reader.rows_seen == 0


def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_kept() -> None:
    good = ",".join(cdr_row(pkid='"good1"'))
    short = ",".join(cdr_row(pkid='"short"')[:50])
    not_int = ",".join(cdr_row(pkid='"notint"', duration="12s"))
    broken_quote = ",".join(cdr_row(pkid='"unterminated'))
    good2 = ",".join(cdr_row(pkid='"good2"'))
    data = cdr_text([]) + "\n".join([good, short, not_int, broken_quote, good2]).encode() + b"\n"
    data += b'1,2,"\xff\xfe"\n'
    data += ",".join(cdr_row(pkid='"cut"'))[:300].encode()  # truncated last line, no newline
    _, rows = read(data)
    assert [r.values[50] for r in rows if isinstance(r, Row)] == ["good1", "good2"]
    errors = {r.line: r.reason for r in rows if isinstance(r, RowError)}
    assert errors[4] == "50 fields, expected 133"
    assert errors[5] == "non-integer value in INTEGER column duration"
    assert errors[6].startswith("malformed CSV") or "fields, expected 133" in errors[6]
    assert errors[8].startswith("invalid UTF-8")
    assert "the file ends in the middle of this line" in errors[9]


def test_file_names_parse_from_the_right() -> None:
    name = parse_file_name("cdr_OHSU_CUCM_LAB_02_202012260557_476630")
    assert name is not None
    assert (name.kind, name.cluster, name.node, name.seq) == ("cdr", "OHSU_CUCM_LAB", 2, 476630)
    assert name.stamp == datetime(2020, 12, 26, 5, 57, tzinfo=UTC)
    assert parse_file_name("cmr_C_01_202001010000_7.gz").kind == "cmr"
    assert parse_file_name("report.csv") is None


class LazyFile(io.RawIOBase):
    """A file of `size` bytes that exists only as it is read: header, then one row again and
    again. Each row carries a 4 KB extra column, so a gigabyte is ~230,000 rows."""

    def __init__(self, size: int) -> None:
        names = ",".join(f'"{n}"' for n in header("cdr", 133))
        self.head = f'{names},"notes"\n'.encode()
        self.row = (",".join(cdr_row(pkid='"x"')) + ',"' + "n" * 4096 + '"\n').encode()
        self.remaining = size - len(self.head)
        self.head_read = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = b""
        if not self.head_read:
            data, self.head_read = self.head, True
        elif self.remaining > 0:
            self.remaining -= len(self.row)
            data = self.row
        buffer[: len(data)] = data
        return len(data)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_a_one_gigabyte_file_is_streamed_not_loaded() -> None:
    size = 1 << 30
    stream = LazyFile(size)
    baseline = rss_bytes()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        count = sum(1 for item in CucmReader(stream) if isinstance(item, Row))  # type: ignore[arg-type]
    finally:
        done.set()
        sampler.join()
    assert count == -(-(size - len(stream.head)) // len(stream.row))
    assert peak - baseline < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("duration", "-12", True),
        ("origIpAddr", "-1062731415", True),
        ("duration", "", True),
        ("duration", "-", False),
        ("duration", "1-2", False),
        ("duration", "--3", False),
        ("duration", '"1,2"', False),  # a comma inside a quoted INTEGER value
        ("duration", "٣", False),  # a digit, but not an ASCII one
        ("duration", "+3", False),
        ("duration", " 3", False),
    ],
)
def test_integer_columns_take_only_optionally_signed_ascii_digits(
    column: str, value: str, ok: bool
) -> None:
    _, rows = read(cdr_text([cdr_row(pkid='"p"', **{column: value})]))
    assert isinstance(rows[0], Row) is ok
    if not ok:
        assert rows[0].reason.startswith("non-integer value") and column in rows[0].reason
