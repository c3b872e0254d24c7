"""Streaming, header-driven parser for CUCM CDR and CMR flat files.

A file is line 1 (field names, normally quoted), line 2 (field types, optional in sanitized
exports), then one record per line. Everything is driven by the header: the generation
(118/129/133 CDR, 19/44/48 CMR fields) and any unknown extra columns follow from it, and
whether the file holds CDRs or CMRs is decided by which fields it has.

CUCM never writes a newline inside a value, so each physical line is parsed on its own: a
broken quote or a truncated last line damages only its own row, never the rows after it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import operator
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cdr.fields import ALIASES, CDR_BY_NAME, CMR_BY_NAME

_TYPE_RE = re.compile(
    r"(?:INTEGER|BIGINT|SMALLINT|UNIQUEIDENTIFIER|(?:N?VAR)?CHAR\(\d+\)|STRING|TEXT|DATETIME)",
    re.IGNORECASE,
)
# One C-level match over all INTEGER columns of a row joined by commas: empty or signed digits.
_INT_LIST_RE = re.compile(r"(?:-?[0-9]+)?(?:,(?:-?[0-9]+)?)*")
_INT_RE = re.compile(r"-?[0-9]+")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_NAME_RE = re.compile(
    r"^(?P<kind>cdr|cmr)_(?P<cluster>.+)_(?P<node>\d+)_(?P<stamp>\d{12})_(?P<seq>\d+)$"
)


class NotCucmFile(ValueError):
    """The file as a whole cannot be read as a CUCM CDR/CMR file; the message says why."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    values: list[str]
    raw: str


@dataclass(slots=True)
class Layout:
    """The columns of one file: canonical names, types and where each name sits."""

    kind: str
    names: list[str]
    types: list[str]
    has_type_line: bool
    index: dict[str, int] = field(init=False)
    integer_positions: tuple[int, ...] = field(init=False)
    unknown: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.names)}
        self.integer_positions = tuple(
            i for i, t in enumerate(self.types) if t.upper() in ("INTEGER", "BIGINT", "SMALLINT")
        )
        catalogue = CDR_BY_NAME if self.kind == "cdr" else CMR_BY_NAME
        self.unknown = [n for n in self.names if n.lower() not in catalogue]

    def getter(self, *names: str) -> operator.itemgetter:
        """An itemgetter for the named columns; a column the file lacks reads as ''."""
        return operator.itemgetter(*(self.index.get(n, len(self.names)) for n in names))

    def as_dict(self, values: list[str]) -> dict[str, str]:
        return dict(zip(self.names, values, strict=False))


@dataclass(frozen=True, slots=True)
class FileName:
    kind: str
    cluster: str
    node: int
    stamp: datetime
    seq: int


def parse_file_name(name: str) -> FileName | None:
    """`cdr_<cluster>_<node>_<yyyymmddhhmm>_<seq>` (cluster ids may contain `_`)."""
    base = name[:-3] if name.endswith(".gz") else name
    match = _NAME_RE.match(base)
    if not match:
        return None
    try:
        stamp = datetime.strptime(match["stamp"], "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    return FileName(match["kind"], match["cluster"], int(match["node"]), stamp, int(match["seq"]))


def open_binary(path: Path) -> BinaryIO:
    """Open a file for reading, transparently un-gzipping it when it starts with gzip magic."""
    raw = path.open("rb")
    if raw.read(2) == _GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 of the bytes as stored, and their count."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _integers_ok(joined: str) -> bool:
    """Whether every comma-separated value is empty or an optionally signed run of ASCII
    digits — `_INT_LIST_RE.fullmatch` in a few C-level string calls, as this runs per row.

    Framed by commas, a value's sign is the "-" right after a comma; drop those, and what
    is left must be digits and commas only. A lone "-" shows up as ",-,".
    """
    framed = f",{joined},"
    if ",-," in framed:
        return False
    digits = framed.replace(",-", ",").replace(",", "")
    return not digits or (digits.isdigit() and digits.isascii())


def split_line(text: str) -> list[str]:
    return next(csv.reader((text,), strict=True), [])


def _decode_header(raw: bytes) -> str:
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if b"\x00" in raw:
        raise NotCucmFile("binary data, not a CUCM CDR/CMR text file")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise NotCucmFile(f"header line is not UTF-8 text ({exc.reason})") from exc


def canonical_name(name: str, kind: str) -> str:
    catalogue = CDR_BY_NAME if kind == "cdr" else CMR_BY_NAME
    key = name.strip().lower()
    spec = catalogue.get(key) or catalogue.get(ALIASES.get(key, "").lower())
    return spec.name if spec else name.strip()


def detect_kind(names: list[str]) -> str:
    lowered = {n.strip().lower() for n in names}
    if "pkid" in lowered and "datetimeorigination" in lowered:
        return "cdr"
    if "pkid" in lowered and "datetimestamp" in lowered:
        return "cmr"
    shown = ", ".join(names[:3]) + ("…" if len(names) > 3 else "")
    raise NotCucmFile(
        "not a CUCM CDR/CMR file: line 1 must name the fields (cdrRecordType, …, pkid, "
        f"dateTimeOrigination or dateTimeStamp); found {len(names)} field(s): {shown}"
    )


class CucmReader:
    """Iterate the records of one CUCM file as `Row` or `RowError`, in file order.

    Construction reads the header (and the type line when present) and raises
    `NotCucmFile` for empty, binary or non-CUCM input.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._lines = iter(stream)
        self.line = 0
        self._pending: tuple[int, bytes] | None = None
        first = self._next_nonblank()
        if first is None:
            raise NotCucmFile("empty file")
        try:
            header = split_line(_decode_header(first))
        except csv.Error as exc:
            raise NotCucmFile(f"line 1 is not a CSV header ({exc})") from exc
        kind = detect_kind(header)
        names = [canonical_name(n, kind) for n in header]
        if len(set(names)) != len(names):
            raise NotCucmFile("line 1 names the same field twice")
        types, has_type_line = self._read_type_line(names, kind)
        self.layout = Layout(kind=kind, names=names, types=types, has_type_line=has_type_line)
        positions = self.layout.integer_positions
        self._ints = operator.itemgetter(*positions) if positions else None
        self.rows_seen = 0

    def _next_nonblank(self) -> bytes | None:
        for raw in self._lines:
            self.line += 1
            if raw.strip():
                return raw
        return None

    def _read_type_line(self, names: list[str], kind: str) -> tuple[list[str], bool]:
        second = self._next_nonblank()
        if second is not None:
            try:
                candidate = split_line(second.decode("utf-8").rstrip("\r\n"))
            except (UnicodeDecodeError, csv.Error):
                candidate = []
            if candidate and all(_TYPE_RE.fullmatch(t.strip()) for t in candidate):
                if len(candidate) != len(names):
                    raise NotCucmFile(
                        f"line 2 lists {len(candidate)} field types for {len(names)} field names"
                    )
                return [t.strip().upper() for t in candidate], True
            # No type line (sanitized exports): line 2 is the first record.
            self._pending = (self.line, second)
        catalogue = CDR_BY_NAME if kind == "cdr" else CMR_BY_NAME
        types = [catalogue[n.lower()].type if n.lower() in catalogue else "VARCHAR" for n in names]
        return types, False

    def _raw_lines(self) -> Iterator[tuple[int, bytes]]:
        if self._pending is not None:
            yield self._pending
            self._pending = None
        for raw in self._lines:
            self.line += 1
            yield self.line, raw

    def __iter__(self) -> Iterator[Row | RowError]:
        width = len(self.layout.names)
        ints = self._ints
        many = len(self.layout.integer_positions) > 1
        commas = len(self.layout.integer_positions) - 1
        for number, raw in self._raw_lines():
            complete = raw.endswith(b"\n")
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield RowError(number, f"invalid UTF-8 at byte {exc.start} ({exc.reason})")
                continue
            if not text.strip():
                continue
            self.rows_seen += 1
            hint = "" if complete else "; the file ends in the middle of this line"
            try:
                values = split_line(text)
            except csv.Error as exc:
                yield RowError(number, f"malformed CSV ({exc}){hint}")
                continue
            if len(values) != width:
                yield RowError(number, f"{len(values)} fields, expected {width}{hint}")
                continue
            if ints is not None and not (
                _integers_ok(joined := ",".join(ints(values)))
                and joined.count(",") == commas  # no comma inside a value
                if many
                else _integers_ok(ints(values)) and "," not in ints(values)
            ):
                yield RowError(number, self._integer_problem(values))
                continue
            yield Row(number, values, text)

    def _integer_problem(self, values: list[str]) -> str:
        for i in self.layout.integer_positions:
            value = values[i]
            if value and not _INT_RE.fullmatch(value):
                shown = value if len(value) <= 40 else value[:40] + "…"
                return f"non-integer value {shown!r} in INTEGER column {self.layout.names[i]}"
        return "non-integer value in an INTEGER column"


# --- Value helpers -------------------------------------------------------------------------


def to_int(value: str) -> int | None:
    return int(value) if value else None


def epoch_to_datetime(value: str | int | None) -> datetime | None:
    """UTC epoch seconds → aware datetime; 0 or empty (e.g. dateTimeConnect of a call that
    never connected) → None."""
    if value in (None, "", "0", 0):
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


def never_connected(date_time_connect: str | int | None) -> bool:
    return date_time_connect in (None, "", "0", 0)


def int_to_ipv4(value: str | int | None) -> str | None:
    """CUCM's signed little-endian int32 IPv4 → dotted text (1048291520 → 192.168.123.62).

    0 means "no IPv4 address". Values are read modulo 2^32 so signed and unsigned forms agree.
    """
    if value in (None, ""):
        return None
    number = int(value) % (1 << 32)
    if number == 0:
        return None
    return socket.inet_ntoa(struct.pack("<I", number))


def parse_vq_metrics(value: str) -> dict[str, str]:
    """CMR `varVQMetrics` → {key: value}. Pairs are `;`-separated (comma in old sanitized
    exports); values stay text because some are (e.g. `VoRxCodec=G.711 u-la`)."""
    if not value:
        return {}
    separator = ";" if ";" in value or "," not in value else ","
    metrics: dict[str, str] = {}
    for pair in value.split(separator):
        key, sep, item = pair.partition("=")
        if sep and key.strip():
            metrics[key.strip()] = item.strip()
    return metrics
