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
import itertools
import operator
import re
import socket
import struct
import zlib
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
# A line that is not whitespace only (possessive: a blank run costs one pass, no backtracking).
_CONTENT_LINE = re.compile(rb"(?m)^[ \t\r\f\v]*+[^\s][^\n]*")
# Times CUCM writes: unsigned 32-bit epoch seconds, 0 = never. `_TIME` accepts every value
# up to 3999999999 in one C-level match over a row's time columns joined by commas; any
# other value is checked exactly by `_time_problem`.
MAX_EPOCH = (1 << 32) - 1
TIME_FIELDS = ("dateTimeOrigination", "dateTimeConnect", "dateTimeDisconnect", "dateTimeStamp")
_TIME = r"(?:[1-3][0-9]{9}+|[0-9]{0,9}+)"
_TIMES_RE = re.compile(f"{_TIME}(?:,{_TIME})*+")
# Lines are read in blocks of this size: a line longer than the reader's limit is skipped
# block by block, never held whole.
_BLOCK = 1 << 16
# A block whose lines average fewer than 64 bytes is blank lines or junk, never a CUCM
# export (a record is hundreds of bytes): it takes the path that skips blank runs in C.
_SHORT_LINES_SHIFT = 6
DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_FILE_BYTES = 2 << 30
_NAME_RE = re.compile(
    r"^(?P<kind>cdr|cmr)_(?P<cluster>.+)_(?P<node>\d+)_(?P<stamp>\d{12})_(?P<seq>\d+)$"
)


class NotCucmFile(ValueError):
    """The file as a whole cannot be read as a CUCM CDR/CMR file; the message says why."""


class FileCutShort(Exception):
    """Reading stopped before the end of the file (a gzip stream cut short or corrupt, a read
    error, a limit); `CucmReader` raises it once every line before the cut is yielded."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(f"{reason}, after line {line}")
        self.reason = reason
        self.line = line


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
    # Whatever line 1 holds (any file can be dropped or linked into the folder) reaches every
    # reader of the ingest record: name only what is a known CUCM field name.
    known = [canonical_name(n, "cdr") for n in names if _is_field_name(n)]
    shown = f" ({', '.join(known[:3])}{', …' if len(known) > 3 else ''})" if known else ""
    raise NotCucmFile(
        "not a CUCM CDR/CMR file: line 1 must name the fields (cdrRecordType, …, pkid, "
        f"dateTimeOrigination or dateTimeStamp); found {len(names)} field(s), "
        f"{len(known)} of them CUCM field names{shown}"
    )


def _is_field_name(name: str) -> bool:
    key = name.strip().lower()
    return key in CDR_BY_NAME or key in CMR_BY_NAME or key in ALIASES


class CucmReader:
    """Iterate the records of one CUCM file as `Row` or `RowError`, in file order.

    Construction reads the header (and the type line when present) and raises
    `NotCucmFile` for empty, binary, unreadable or non-CUCM input. Iteration raises
    `FileCutShort` once every line before the cut has been yielded.

    Bounded whatever the input: lines are read in blocks, a line longer than
    `max_line_bytes` is rejected without ever being held whole, reading stops past
    `max_bytes` (uncompressed), and runs of blank lines are skipped in C.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_bytes = max_bytes
        self._stream = stream
        self._lines = self._physical_lines()
        self.line = 0
        self._pending: tuple[int, bytes | str] | None = None
        self._unterminated = 0  # the last line, when the file does not end with a newline
        try:
            first = self._next_nonblank()
            if first is None:
                raise NotCucmFile("empty file")
            if isinstance(first, str):
                raise NotCucmFile(f"line 1 is {first}")
            header = split_line(_decode_header(first))
            kind = detect_kind(header)
        except csv.Error as exc:
            raise NotCucmFile(f"line 1 is not a CSV header ({exc})") from exc
        except FileCutShort as exc:
            raise NotCucmFile(exc.reason) from exc
        names = [canonical_name(n, kind) for n in header]
        if len(set(names)) != len(names):
            raise NotCucmFile("line 1 names the same field twice")
        try:
            types, has_type_line = self._read_type_line(names, kind)
        except FileCutShort as exc:
            raise NotCucmFile(exc.reason) from exc
        self.layout = Layout(kind=kind, names=names, types=types, has_type_line=has_type_line)
        positions = self.layout.integer_positions
        times = [self.layout.index[n] for n in TIME_FIELDS if n in self.layout.index]
        self._time_positions = times
        self._times = operator.itemgetter(*times) if times else None
        # When the time columns are INTEGER ones (in every CUCM file), they are read first of
        # the INTEGER columns, and one match at the start of those joined checks them.
        self._times_first = bool(times) and len(positions) > 1 and set(times) <= set(positions)
        if self._times_first:
            positions = (*times, *(i for i in positions if i not in times))
        self._times_prefix = re.compile(",".join([_TIME] * len(times)) + r"(?:,|\Z)").match
        self._ints = operator.itemgetter(*positions) if positions else None
        self.rows_seen = 0

    def _physical_lines(self) -> Iterator[tuple[int, bytes | str]]:
        """(line number, bytes without the newline) of each line, blank runs mostly skipped;
        a `str` instead of bytes is why the line is rejected unread (too long, cut off)."""
        stream = self._stream
        read = stream.read1 if hasattr(stream, "read1") else stream.read
        limit = self.max_line_bytes
        number = 0  # lines before `chunk`
        carry = b""  # the start of a line whose end is not read yet
        skipping = False  # inside an over-long line: drop bytes up to its newline
        total = 0
        while True:
            try:
                block = read(_BLOCK)
            except (OSError, EOFError, zlib.error) as exc:
                if carry or skipping:
                    yield number + 1, "cut off: the file ends in the middle of this line"
                raise FileCutShort(self._read_error(exc), number) from exc
            if not block:
                break
            total += len(block)
            if total > self.max_bytes:
                if carry or skipping:
                    yield number + 1, "cut off: the file is over the size limit in this line"
                limit_text = f"{self.max_bytes:,} bytes uncompressed"
                raise FileCutShort(f"the file is larger than the limit of {limit_text}", number)
            if skipping:
                end = block.find(b"\n")
                if end < 0:
                    continue
                number += 1
                yield number, f"longer than {limit:,} bytes"
                block = block[end + 1 :]
                skipping = False
            # Split at most len/64 times: a block of real records splits whole, one of
            # blank lines or junk stops early and takes the path that skips blanks in C.
            cap = (len(block) >> _SHORT_LINES_SHIFT) + 1
            lines = block.split(b"\n", cap)
            if len(lines) > cap:
                chunk = carry + block
                last = chunk.rfind(b"\n")
                carry = chunk[last + 1 :]
                if len(carry) > limit:
                    carry, skipping = b"", True
                if not chunk[: last + 1].isspace():
                    yield from self._content_lines(chunk, last, number, limit)
                number += chunk.count(b"\n", 0, last + 1)
                continue
            if carry:
                lines[0] = carry + lines[0]
            carry = lines.pop()
            if len(carry) > limit:
                carry, skipping = b"", True
            if lines and max(map(len, lines)) > limit:
                for raw in lines:
                    number += 1
                    yield number, raw if len(raw) <= limit else f"longer than {limit:,} bytes"
                continue
            for raw in lines:
                number += 1
                yield number, raw
        if skipping:
            yield number + 1, f"longer than {limit:,} bytes"
        elif carry:
            self._unterminated = number + 1
            yield number + 1, carry

    @staticmethod
    def _content_lines(
        chunk: bytes, last: int, number: int, limit: int
    ) -> Iterator[tuple[int, bytes | str]]:
        """The lines of `chunk[:last]` that are not whitespace only, numbered after
        `number`: found by one regex scan, so a run of blank lines costs no Python."""
        position = 0
        for match in _CONTENT_LINE.finditer(chunk, 0, last):
            number += chunk.count(b"\n", position, match.start()) + 1
            position = match.end() + 1
            raw = match.group()
            yield number, raw if len(raw) <= limit else f"longer than {limit:,} bytes"

    def _read_error(self, exc: BaseException) -> str:
        if isinstance(self._stream, gzip.GzipFile):
            return f"corrupt or truncated gzip file ({exc})"
        return f"cannot read the file ({exc})"

    def _next_nonblank(self) -> bytes | str | None:
        for number, raw in self._lines:
            self.line = number
            if isinstance(raw, str) or raw.strip():
                return raw
        return None

    def _read_type_line(self, names: list[str], kind: str) -> tuple[list[str], bool]:
        second = self._next_nonblank()
        if isinstance(second, bytes):
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
        if second is not None:
            # No type line (sanitized exports): line 2 is the first record.
            self._pending = (self.line, second)
        catalogue = CDR_BY_NAME if kind == "cdr" else CMR_BY_NAME
        types = [catalogue[n.lower()].type if n.lower() in catalogue else "VARCHAR" for n in names]
        return types, False

    def __iter__(self) -> Iterator[Row | RowError]:
        width = len(self.layout.names)
        ints = self._ints
        many = len(self.layout.integer_positions) > 1
        commas = len(self.layout.integer_positions) - 1
        times = self._times
        several_times = len(self._time_positions) > 1
        times_ok = _TIMES_RE.fullmatch
        times_first = self._times_first
        times_prefix_ok = self._times_prefix
        lines: Iterator[tuple[int, bytes | str]] = self._lines
        if self._pending is not None:
            lines = itertools.chain((self._pending,), lines)
            self._pending = None
        for number, raw in lines:
            if raw.__class__ is str:
                self.rows_seen += 1
                yield RowError(number, raw)  # type: ignore[arg-type]
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")  # type: ignore[union-attr]
            except UnicodeDecodeError as exc:
                yield RowError(number, f"invalid UTF-8 at byte {exc.start} ({exc.reason})")
                continue
            if not text or text.isspace():
                continue
            self.rows_seen += 1
            if "\x00" in text:
                yield RowError(number, "NUL byte in the line")
                continue
            try:
                values = split_line(text)
            except csv.Error as exc:
                yield RowError(number, f"malformed CSV ({exc}){self._hint(number)}")
                continue
            if len(values) != width:
                hint = self._hint(number)
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
            if times is not None and not (
                times_prefix_ok(joined)
                if times_first
                else times_ok(",".join(times(values)) if several_times else times(values))
            ):
                problem = self._time_problem(values)
                if problem:
                    yield RowError(number, problem)
                    continue
            yield Row(number, values, text)

    def _hint(self, number: int) -> str:
        if number == self._unterminated:
            return "; the file ends in the middle of this line"
        return ""

    def _integer_problem(self, values: list[str]) -> str:
        # The value itself is not echoed: reasons are shown to every reader of the record.
        for i in self.layout.integer_positions:
            value = values[i]
            if value and not _INT_RE.fullmatch(value):
                return f"non-integer value in INTEGER column {self.layout.names[i]}"
        return "non-integer value in an INTEGER column"

    def _time_problem(self, values: list[str]) -> str:
        """Why a time column cannot be stored, or "" when every one can after all."""
        for i in self._time_positions:
            value = values[i]
            if not value:
                continue
            if not (_INT_RE.fullmatch(value) and value.isascii()):
                return f"{self.layout.names[i]} is not a time in epoch seconds"
            if not 0 <= int(value) <= MAX_EPOCH:
                return (
                    f"{self.layout.names[i]} is outside 0…{MAX_EPOCH} epoch seconds "
                    "(unsigned 32 bits, as CUCM writes)"
                )
        return ""


# --- Value helpers -------------------------------------------------------------------------


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
