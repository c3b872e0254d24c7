"""Ingesting CUCM files: parse, store in batches, report, tell the batch listener.

Records go in with `INSERT … ON CONFLICT (cluster, pkid) DO NOTHING RETURNING id, pkid`:
the database itself decides which rows are new, so two ingests of the same file at the same
time (two watchers, watcher + upload, a CUCM resend) store each record once, and only the
ingest that stored a record tells the batch listener (the webhooks) about it — in the same
transaction. The listener is whatever app registered one through `cdr.contracts`: this module
never names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import queue
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from django.conf import settings
from django.db import DatabaseError, DataError, connection, transaction
from django.db.models import Model
from django.utils import timezone

from cdr.calls import CallAssembler, CallRows
from cdr.contracts import (
    INGEST_PARAMS,
    BatchListener,
    StatementTail,
    StoredRecord,
    batch_listener,
)
from cdr.models import Cdr, CdrFile, Cmr, RecordLayout
from cdr.parsing import (
    CucmReader,
    FileCutShort,
    Layout,
    NotCucmFile,
    Row,
    RowError,
    file_digest,
    open_binary,
    parse_file_name,
)
from cdr.sql import INT, MOS, TIME, BatchInsert, pg_array, synchronous_commit

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_STORED_ERRORS = 1000
# A real CUCM file holds tens of thousands of records at most: past this many rejected rows
# a file is junk (a gzip bomb of short lines costs the CPU by the row), and is not read on.
MAX_REJECTED_ROWS = 100_000
# The length of the record columns `pkid` and `cluster`: a longer value is rejected, not cut
# (two different pkids cut to the same 64 characters would be one record).
KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class RecordKey:
    """What makes a record new, one definition for ingest and the dry run: (cluster, pkid),
    the cluster read from the row, else the file name's (ingest's SQL applies the same
    fallback: see `cdr.sql.BatchInsert._converted`)."""

    pkid_at: int
    cluster_at: int | None
    default_cluster: str

    @classmethod
    def of(cls, layout: Layout, file_cluster: str) -> RecordKey:
        return cls(
            layout.index["pkid"],
            layout.index.get("globalCallId_ClusterID"),
            file_cluster[:KEY_LENGTH],
        )

    def problem(self, values: list[str]) -> str | None:
        """Why a row has no usable key (it is rejected), or None."""
        pkid = values[self.pkid_at]
        if not pkid:
            return "empty pkid"
        if len(pkid) > KEY_LENGTH:
            return f"pkid longer than {KEY_LENGTH} characters"
        if self.cluster_at is not None and len(values[self.cluster_at]) > KEY_LENGTH:
            return f"globalCallId_ClusterID longer than {KEY_LENGTH} characters"
        return None

    def __call__(self, values: list[str]) -> tuple[str, str]:
        cluster = values[self.cluster_at] if self.cluster_at is not None else ""
        return cluster or self.default_cluster, values[self.pkid_at]


LEASE = timedelta(minutes=2)


# Typed columns: (model column, CUCM header name, kind). Values travel as the text read from
# the file ("" → NULL) and the database converts them: epoch seconds become timestamps in SQL,
# so no Python datetime is built per row.
TEXT64, TEXT129, TEXT255 = 64, 129, 255  # and `cdr.sql.INT`, `cdr.sql.TIME`
CDR_COLUMNS: tuple[tuple[str, str, str | int], ...] = (
    ("call_manager_id", "globalCallID_callManagerId", INT),
    ("call_id", "globalCallID_callId", INT),
    ("orig_leg_id", "origLegCallIdentifier", INT),
    ("dest_leg_id", "destLegIdentifier", INT),
    ("origination_at", "dateTimeOrigination", TIME),
    ("connect_at", "dateTimeConnect", TIME),
    ("disconnect_at", "dateTimeDisconnect", TIME),
    ("duration", "duration", INT),
    ("calling_party_number", "callingPartyNumber", TEXT255),
    ("original_called_party_number", "originalCalledPartyNumber", TEXT255),
    ("final_called_party_number", "finalCalledPartyNumber", TEXT255),
    ("last_redirect_dn", "lastRedirectDn", TEXT255),
    ("orig_device_name", "origDeviceName", TEXT129),
    ("dest_device_name", "destDeviceName", TEXT129),
    ("orig_cause_value", "origCause_value", INT),
    ("dest_cause_value", "destCause_value", INT),
    # What call assembly reads about how the leg began and ended (`cdr.facts`).
    ("orig_termination_on_behalf_of", "origCallTerminationOnBehalfOf", INT),
    ("dest_termination_on_behalf_of", "destCallTerminationOnBehalfOf", INT),
    ("join_on_behalf_of", "joinOnBehalfOf", INT),
    ("orig_redirect_reason", "origCalledPartyRedirectReason", INT),
    ("last_redirect_reason", "lastRedirectRedirectReason", INT),
    ("orig_redirect_on_behalf_of", "origCalledPartyRedirectOnBehalfOf", INT),
    ("last_redirect_on_behalf_of", "lastRedirectRedirectOnBehalfOf", INT),
)
CMR_COLUMNS: tuple[tuple[str, str, str | int], ...] = (
    ("call_manager_id", "globalCallID_callManagerId", INT),
    ("call_id", "globalCallID_callId", INT),
    ("node_id", "nodeId", INT),
    ("directory_num", "directoryNum", TEXT255),
    ("call_identifier", "callIdentifier", INT),
    ("stamp_at", "dateTimeStamp", TIME),
    ("device_name", "deviceName", TEXT129),
    ("duration", "duration", INT),
    ("jitter", "jitter", INT),
    ("latency", "latency", INT),
    ("packets_lost", "numberPacketsLost", INT),
    ("packets_received", "numberPacketsReceived", INT),
    ("mos", "varVQMetrics", MOS),
)
# Staged per row: `cdr.sql.STAGED`, then each typed column as the text read from the file.
# The database converts them ("" → NULL, epoch → timestamp, long text cut to the column), so
# a row costs Python one C-level itemgetter call.
# COPY's text format escapes backslash, tab, newline and carriage return; CUCM lines hardly
# ever hold one, so only a line that does pays for escaping each value.
_COPY_SPECIAL = re.compile(r"[\\\t\r\n]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n"})


class _Writer:
    """Stores rows of one layout in one statement per batch and reports which were new.

    The rows are prepared here, on the read-ahead thread, for the statements of
    `cdr.sql.BatchInsert`: COPY text on PostgreSQL, parameter tuples on SQLite.
    """

    def __init__(
        self,
        layout: Layout,
        layout_id: int,
        file: CdrFile | None,
        cluster: str,
        *,
        assembler: CallAssembler | None = None,
    ):
        self.layout = layout
        # Joins each batch's records into calls in the batch's transaction (`cdr.calls`).
        self.assembler = assembler
        self.model: type[Model] = Cdr if layout.kind == "cdr" else Cmr
        columns = CDR_COLUMNS if layout.kind == "cdr" else CMR_COLUMNS
        present = [(col, name, kind) for col, name, kind in columns if name in layout.index]
        self.columns = [(col, kind) for col, _, kind in present]
        self.key = RecordKey.of(layout, cluster)
        cluster_at = self.key.cluster_at
        positions = [cluster_at if cluster_at is not None else -1, self.key.pkid_at]
        positions += [layout.index[name] for _, name, _ in present]
        # A file without the cluster column reads the "" appended to every row by `_values`.
        self._get = operator.itemgetter(*positions)
        self._needs_blank = cluster_at is None
        self.default_cluster = self.key.default_cluster
        self.file_id = file.pk if file else None
        self.layout_id = layout_id
        self.postgres = connection.vendor == "postgresql"
        self.statements = BatchInsert(
            self.model, self.columns, postgres=self.postgres, calls=assembler is not None
        )

    def prepare(self, rows: list[Row]) -> tuple[Any, CallRows | None]:
        """What `insert` sends for these rows, built on the read-ahead thread: on PostgreSQL
        the batch as one block of COPY text, elsewhere the parameter tuples; and the rows'
        call keys."""
        calls = self.assembler.prepare(rows) if self.assembler is not None else None
        return self._data(rows), calls

    def _data(self, rows: list[Row]) -> Any:
        get = self._get
        blank = self._needs_blank
        staged = [
            (str(row.line), row.raw, *get([*row.values, ""] if blank else row.values))
            for row in rows
        ]
        if not self.postgres:
            return staged
        # Every staged value is a digit string or comes from its raw line, so one C-level
        # scan of the batch's lines tells whether any needs escaping at all.
        raws = "".join([row.raw for row in rows])
        if "\\" not in raws and "\t" not in raws and "\r" not in raws and "\n" not in raws:
            lines = ["\t".join(item) for item in staged]
        else:
            lines = [
                "\t".join(item)
                if _COPY_SPECIAL.search(row.raw) is None
                else "\t".join(v.translate(_COPY_ESCAPES) for v in item)
                for row, item in zip(rows, staged, strict=True)
            ]
        lines.append("")
        return "\n".join(lines).encode()

    def rolled_back(self) -> None:
        """The batch's transaction rolled back, and with it perhaps the staging table."""
        self.statements.rolled_back()

    def insert(
        self, rows: list[Row], prepared: tuple[Any, CallRows | None], *, returning: bool = True
    ) -> list[StoredRecord] | int:
        """Store `rows` (`prepared` is what `prepare` made of them); the records that were
        new (or only their count, without `returning`)."""
        data, params = self._with_calls(prepared)
        if self.assembler is not None:
            returned = self.statements.run(data, params, returning=True)
            self.assembler.arrived(call for _, _, call in returned)
            if not returning:
                return len(returned)
            returned = [(pk, line) for pk, line, _ in returned]
        else:
            returned = self.statements.run(data, params, returning=returning)
        if not returning:
            return returned
        if not returned:
            return []
        by_line = {row.line: row for row in rows}
        stored = [StoredRecord(pk, by_line[line].values, line) for pk, line in returned]
        stored.sort(key=lambda record: record.line)
        return stored

    def insert_with(self, prepared: tuple[bytes, CallRows | None], tail: StatementTail) -> int:
        """Store the batch `prepared` for PostgreSQL and run `tail` in the same statement;
        how many records were new."""
        if not INGEST_PARAMS.isdisjoint(tail.params):
            raise ValueError(f"a statement tail may not use {sorted(INGEST_PARAMS)}")
        data, params = self._with_calls(prepared)
        row = self.statements.run_with(data, params, tail)
        if self.assembler is not None:
            self.assembler.arrived(row[1] or ())
            row = (row[0], *row[2:])
        tail.done(row[1:])
        return int(row[0])

    def _with_calls(self, prepared: tuple[Any, CallRows | None]) -> tuple[Any, dict[str, Any]]:
        """The batch's data and parameters, each row given its call (`cdr.calls`): in the
        batch's transaction, just before it is stored."""
        data, calls = prepared
        params = self._params()
        if self.assembler is None or calls is None:
            return data, params
        refs = self.assembler.assign(calls)
        if self.postgres:
            params.update(ingest_call_lines=pg_array(calls.lines), ingest_call_refs=pg_array(refs))
            return data, params
        return [(*item, ref) for item, ref in zip(data, refs, strict=True)], params

    def _params(self) -> dict[str, Any]:
        """Ingest's named parameters in the statements (`cdr.contracts.INGEST_PARAMS`)."""
        return {
            "ingest_file": self.file_id,
            "ingest_layout": self.layout_id,
            "ingest_cluster": self.default_cluster,
        }


def layout_get_or_create(layout: Layout) -> int:
    digest = hashlib.sha256(json.dumps([layout.kind, layout.names]).encode()).hexdigest()
    obj, _ = RecordLayout.objects.get_or_create(
        digest=digest, defaults={"kind": layout.kind, "fields": layout.names}
    )
    return obj.pk


@dataclass(slots=True)
class _Counts:
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    cut: FileCutShort | None = None  # reading stopped before the end of the file


Problem = tuple[int, str]  # (line, reason)


def _chunks(
    reader: CucmReader,
    writer: _Writer,
    size: int,
    listener: BatchListener | None,
) -> Iterator[tuple[list[Row], list[Problem], Any, Any]]:
    """The file's good rows in batches of `size`, each with the rows rejected since the last,
    what the writer will send for it and what the batch listener prepared for it. If reading
    stops early (`FileCutShort`, also raised here past MAX_REJECTED_ROWS), the rows read
    before the cut still come as a batch."""

    def batch() -> tuple[list[Row], list[Problem], Any, Any]:
        if not rows:
            return rows, problems, None, None
        ahead = listener.prepare(writer.layout, rows) if listener is not None else None
        return rows, problems, writer.prepare(rows), ahead

    key_problem = writer.key.problem
    rows: list[Row] = []
    problems: list[Problem] = []
    rejected = 0
    try:
        for item in reader:
            if type(item) is RowError:
                problems.append((item.line, item.reason))
            elif reason := key_problem(item.values):
                problems.append((item.line, reason))
            else:
                rows.append(item)
                if len(rows) < size:
                    continue
            if len(rows) >= size or len(problems) >= size:
                rejected += len(problems)
                yield batch()
                rows, problems = [], []
                if rejected > MAX_REJECTED_ROWS:
                    reason = f"more than {MAX_REJECTED_ROWS:,} rows rejected: not read further"
                    raise FileCutShort(reason, item.line)
    except FileCutShort:
        if rows or problems:
            yield batch()
        raise
    if rows or problems:
        yield batch()


# While the read-ahead thread parses, the thread talking to the database needs the GIL back
# quickly each time a reply arrives; with Python's default 5 ms switch interval every
# database round trip would wait for it, and the overlap would gain nothing.
_SWITCH_INTERVAL = 0.0002
_handover_lock = threading.Lock()
_handover_users = 0
_handover_saved = 0.0


def _quick_gil_handover_begin() -> None:
    global _handover_users, _handover_saved
    with _handover_lock:
        if _handover_users == 0:
            _handover_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_handover_saved, _SWITCH_INTERVAL))
        _handover_users += 1


def _quick_gil_handover_end() -> None:
    global _handover_users
    with _handover_lock:
        _handover_users -= 1
        if _handover_users == 0:
            sys.setswitchinterval(_handover_saved)


def _read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced on a background thread up to `depth` ahead of the consumer.

    Parsing is Python; storing a batch is mostly waiting for the database, a wait that
    releases the GIL. Overlapping the two nearly halves the time of a large file. The
    producer's exceptions (a read error, a gzip stream cut short) are raised here, in order;
    if the consumer stops early, the producer stops too.
    """
    channel: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                channel.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
            return
        put((False, None))

    thread = threading.Thread(target=produce, name="cdr-read-ahead", daemon=True)
    _quick_gil_handover_begin()
    thread.start()
    try:
        while True:
            more, item = channel.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()
        _quick_gil_handover_end()


def _store_rows(
    *,
    reader: CucmReader,
    writer: _Writer,
    cdr_file: CdrFile,
    listener: BatchListener | None,
    progress: Callable[[int], None] | None,
) -> _Counts:
    counts = _Counts()
    if listener is not None:
        listener.refresh(writer.layout)
    chunks = _chunks(reader, writer, settings.CDR_BATCH_SIZE, listener)
    with _batch_commits_unflushed(writer.postgres):
        try:
            _store_batches(chunks, writer, cdr_file, listener, progress, counts)
        except FileCutShort as exc:
            counts.cut = exc
    return counts


def _batch_store(
    writer: _Writer,
    rows: list[Row],
    prepared: Any,
    ahead: Any,
    listener: BatchListener | None,
) -> int:
    """Store one batch, in the caller's transaction, with its listener; how many were new."""
    if listener is None:
        return writer.insert(rows, prepared, returning=False)  # type: ignore[return-value]
    if writer.postgres and listener.in_statement:
        tail = listener.statement(writer.layout, rows, ahead)
        if tail is None:
            return writer.insert(rows, prepared, returning=False)  # type: ignore[return-value]
        return writer.insert_with(prepared, tail)
    stored = writer.insert(rows, prepared)
    assert isinstance(stored, list)
    if stored:
        listener.stored(writer.layout, stored, ahead)
    return len(stored)


def _batch_store_isolating(
    writer: _Writer,
    rows: list[Row],
    prepared: Any,
    ahead: Any,
    listener: BatchListener | None,
) -> tuple[int, list[Problem]]:
    """Store one batch in its own transaction; how many were new, and the rows refused.

    The rows are checked before they get here, but if the database still refuses the batch
    for a value (a data error), it is stored again in halves, down to the single rows it
    refuses: those are rejected with the database's reason and every other row is stored.
    Each part goes through `_batch_store` with the batch listener, so the records a part stores
    fire their webhooks once, with them; a part that fails leaves nothing behind.
    """
    try:
        with transaction.atomic():
            return _batch_store(writer, rows, prepared, ahead, listener), []
    except DataError as exc:
        writer.rolled_back()
        if len(rows) == 1:
            return 0, [(rows[0].line, _refused_reason(exc))]
        log.warning(
            "the database refused a batch of %s rows (lines %s-%s); storing it in parts: %s",
            len(rows),
            rows[0].line,
            rows[-1].line,
            _refused_reason(exc),
        )
    middle = len(rows) // 2
    new, refused = 0, []
    for part in (rows[:middle], rows[middle:]):
        stored, bad = _batch_store_isolating(writer, part, writer.prepare(part), ahead, listener)
        new += stored
        refused += bad
    return new, refused


# A quoted part of a database message may be a value from the file: not shown.
_QUOTED = re.compile(r'"[^"]*"')


def _refused_reason(exc: DataError) -> str:
    diag = getattr(exc.__cause__, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc).strip().split("\n")[0]
    return f"refused by the database: {_QUOTED.sub('…', message)}"


@contextmanager
def _batch_commits_unflushed(postgres: bool) -> Iterator[None]:
    """On PostgreSQL, skip the WAL flush at each batch commit, and flush again after.

    Safe: until the ingest record is marked done (a normal, durable commit that also
    flushes every batch before it), a crash only means the file is ingested again, and that
    stores exactly what is missing.
    """
    if not postgres:
        yield
        return
    synchronous_commit(flush=False)
    try:
        yield
    finally:
        try:
            synchronous_commit(flush=True)
        except DatabaseError:  # the connection is gone or its transaction failed: moot
            log.debug("could not reset synchronous_commit", exc_info=True)


def _store_batches(
    chunks: Iterator[tuple[list[Row], list[Problem], Any, Any]],
    writer: _Writer,
    cdr_file: CdrFile,
    listener: BatchListener | None,
    progress: Callable[[int], None] | None,
    counts: _Counts,
) -> None:
    errors: list[dict[str, Any]] = cdr_file.errors
    next_lease = time.monotonic() + LEASE.total_seconds() / 4
    for rows, problems, prepared, ahead in _read_ahead(chunks):
        if rows:
            new, refused = _batch_store_isolating(writer, rows, prepared, ahead, listener)
            counts.stored += new
            counts.duplicate += len(rows) - new - len(refused)
            if refused:
                problems = sorted(problems + refused)
        counts.rejected += len(problems)
        room = MAX_STORED_ERRORS - len(errors)
        errors.extend({"line": line, "reason": reason} for line, reason in problems[:room])
        if progress is not None:
            progress(len(rows) + len(problems))
        if time.monotonic() > next_lease:
            CdrFile.objects.filter(pk=cdr_file.pk).update(lease_until=timezone.now() + LEASE)
            next_lease = time.monotonic() + LEASE.total_seconds() / 4


def cdr_file_create(*, name: str, source: str, path: Path | None = None) -> CdrFile:
    return CdrFile.objects.create(
        name=file_name_fit(name),
        source=source,
        path=str(path) if path else "",
        status=CdrFile.Status.QUEUED,
    )


def file_name_fit(name: str) -> str:
    """`name`, or if it is longer than an ingest record's name can be, its start and end
    around a "…" (CUCM names start with the kind and end with the sequence number)."""
    limit = CdrFile._meta.get_field("name").max_length
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[len(name) - (limit - 1 - head) :]}"


def cdr_file_ingest(
    *,
    path: Path,
    source: str,
    name: str | None = None,
    cdr_file: CdrFile | None = None,
    evaluate_webhooks: bool = True,
    on_stored: BatchListener | None = None,
    progress: Callable[[int], None] | None = None,
    assemble_calls: bool = True,
    calls_touched: set[int] | None = None,
) -> CdrFile:
    """Ingest one file and return its ingest record (done, duplicate or failed).

    Each new record joins its call (`cdr.calls`; without `assemble_calls` records are stored
    without one, as the benchmark's baseline); `calls_touched` collects the calls new records
    joined (`replay_cdr` settles them at its end).

    Bad rows are rejected with their line number and the rest of the file is stored; a file
    that is not a CUCM file at all fails with a reason. Database errors propagate: the batches
    already committed stay, and ingesting the file again stores only what is missing.
    """
    name = file_name_fit(name or path.name)
    if cdr_file is None:
        cdr_file = cdr_file_create(name=name, source=source, path=path)
    sha256, size = file_digest(path)
    cdr_file.sha256, cdr_file.size = sha256, size
    cdr_file.started_at = cdr_file.started_at or timezone.now()
    cdr_file.status = CdrFile.Status.PROCESSING
    cdr_file.errors = []
    parsed_name = parse_file_name(name)
    cdr_file.cluster = parsed_name.cluster[:KEY_LENGTH] if parsed_name else ""
    cdr_file.save()

    already = (
        CdrFile.objects.filter(sha256=sha256, status=CdrFile.Status.DONE)
        .exclude(pk=cdr_file.pk)
        .first()
    )
    if already is not None:
        return _finish(
            cdr_file,
            CdrFile.Status.DUPLICATE,
            error=f"same content as {already.name} (ingest record {already.pk}), nothing stored",
        )

    if evaluate_webhooks and on_stored is None:
        on_stored = batch_listener()
    with open_binary(path) as stream:
        try:
            reader = _reader(stream)
        except NotCucmFile as exc:
            return _finish(cdr_file, CdrFile.Status.FAILED, error=str(exc))
        layout = reader.layout
        cdr_file.kind = layout.kind
        assembler = CallAssembler(layout, cdr_file.cluster) if assemble_calls else None
        if assembler is not None and calls_touched is not None:
            assembler.touched = calls_touched
        writer = _Writer(
            layout, layout_get_or_create(layout), cdr_file, cdr_file.cluster, assembler=assembler
        )
        if parsed_name and parsed_name.kind != layout.kind:
            log.warning("%s is named %s but its header is %s", name, parsed_name.kind, layout.kind)
        counts = _store_rows(
            reader=reader,
            writer=writer,
            cdr_file=cdr_file,
            listener=on_stored if layout.kind == "cdr" else None,
            progress=progress,
        )
    # A retried ingest counts what an interrupted attempt stored as duplicates: each record
    # is still stored, and fires, once.
    cdr_file.stored_count = counts.stored
    cdr_file.duplicate_count = counts.duplicate
    cdr_file.rejected_count = counts.rejected
    if counts.cut is not None:
        # A gzip stream cut short, a read error, the size limit: what was read is stored.
        error = (
            f"{counts.cut}; {counts.stored} records stored, {counts.duplicate} duplicate, "
            f"{counts.rejected} rejected before it"
        )
        return _finish(cdr_file, CdrFile.Status.FAILED, error=error)
    note = "" if reader.rows_seen else "the file has a header but no records"
    return _finish(cdr_file, CdrFile.Status.DONE, error=note)


def _finish(cdr_file: CdrFile, status: str, *, error: str = "") -> CdrFile:
    cdr_file.status = status
    cdr_file.error = error
    cdr_file.finished_at = timezone.now()
    cdr_file.lease_until = None
    cdr_file.save()
    log.info(
        "ingested %s: %s, %s stored, %s duplicate, %s rejected%s",
        cdr_file.name,
        status,
        cdr_file.stored_count,
        cdr_file.duplicate_count,
        cdr_file.rejected_count,
        f" ({error})" if error else "",
        extra={"file": cdr_file.name, "cluster": cdr_file.cluster, "status": status},
    )
    return cdr_file


@dataclass
class DryRun:
    """What ingesting a file would do, computed without storing or sending anything."""

    kind: str = ""
    records: int = 0
    new: int = 0
    rejected: int = 0
    error: str = ""
    matches: Counter[str] = field(default_factory=Counter)


def _reader(stream: BinaryIO) -> CucmReader:
    """A reader of `stream` with the configured bounds: ingest and the dry run read alike."""
    return CucmReader(
        stream,
        max_line_bytes=settings.CDR_MAX_LINE_BYTES,
        max_bytes=settings.CDR_MAX_FILE_BYTES,
    )


def file_dry_run(
    *, path: Path, batch_size: int = 1000, listener: BatchListener | None = None
) -> DryRun:
    """Parse a file, find which records are new, and count what the batch listener (the
    webhooks) would do with them: which webhooks they would fire."""
    result = DryRun()
    with open_binary(path) as stream:
        try:
            reader = _reader(stream)
        except (NotCucmFile, OSError, EOFError) as exc:
            result.error = str(exc)
            return result
        layout = reader.layout
        result.kind = layout.kind
        model = Cdr if layout.kind == "cdr" else Cmr
        if layout.kind != "cdr":
            listener = None
        elif listener is None:
            listener = batch_listener()
        if listener is not None:
            listener.refresh(layout)
        parsed_name = parse_file_name(path.name)
        key = RecordKey.of(layout, parsed_name.cluster if parsed_name else "")
        batch: list[Row] = []

        def flush() -> None:
            keys = {key(r.values) for r in batch}
            known = set(
                model.objects.filter(pkid__in={pkid for _, pkid in keys}).values_list(
                    "cluster", "pkid"
                )
            )
            seen: set[tuple[str, str]] = set()
            new: list[Row] = []
            for row in batch:
                row_key = key(row.values)
                if row_key in known or row_key in seen:
                    continue
                seen.add(row_key)
                new.append(row)
            result.new += len(new)
            if listener is not None and new:
                result.matches.update(listener.dry_run(layout, new))
            batch.clear()

        try:
            for item in reader:
                if isinstance(item, RowError) or key.problem(item.values):
                    result.rejected += 1
                    continue
                result.records += 1
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
        except FileCutShort as exc:  # the rows before the cut are counted, as ingest stores them
            result.error = str(exc)
        if batch:
            flush()
    return result
