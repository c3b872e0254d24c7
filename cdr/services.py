"""Ingesting CUCM files: parse, store in batches, report, hand new CDRs to the webhooks.

Records go in with `INSERT … ON CONFLICT (cluster, pkid) DO NOTHING RETURNING id, pkid`:
the database itself decides which rows are new, so two ingests of the same file at the same
time (two watchers, watcher + upload, a CUCM resend) store each record once, and only the
ingest that stored a record evaluates webhooks for it — in the same transaction.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from cdr.models import Cdr, CdrFile, Cmr, RecordLayout
from cdr.parsing import (
    CucmReader,
    Layout,
    NotCucmFile,
    Row,
    RowError,
    file_digest,
    open_binary,
    parse_file_name,
)

log = logging.getLogger(__name__)

MAX_STORED_ERRORS = 1000
LEASE = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record this ingest stored: its database id and its values in layout order."""

    id: int
    values: list[str]
    line: int


# Called inside the batch's transaction with the CDRs the batch newly stored.
BatchHook = Callable[[Layout, list[StoredRecord]], None]


# Typed columns: (model column, CUCM header name, kind). Values travel as the text read from
# the file ("" → NULL) and the database converts them: epoch seconds become timestamps in SQL,
# so no Python datetime is built per row.
INT, TIME, TEXT64, TEXT129, TEXT255 = "int", "time", 64, 129, 255
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
)
FIXED = ("file_id", "layout_id", "line", "raw", "cluster", "pkid")
FIXED_SQL_TYPES = ("bigint", "bigint", "integer", "text", "text", "text")


class _Writer:
    """Stores rows of one layout in one statement per batch and reports which were new.

    PostgreSQL: COPY into a temporary staging table, then INSERT … SELECT … ON CONFLICT DO
    NOTHING RETURNING (COPY is streamed by psycopg's C code; a 25,000-parameter INSERT would be
    rebuilt in Python for every batch). SQLite: one multi-row INSERT with the same clause.
    """

    def __init__(self, layout: Layout, layout_id: int, file: CdrFile | None, cluster: str):
        self.layout = layout
        self.model: type[Model] = Cdr if layout.kind == "cdr" else Cmr
        columns = CDR_COLUMNS if layout.kind == "cdr" else CMR_COLUMNS
        self.columns = [(col, kind) for col, name, kind in columns if name in layout.index]
        self.positions = [
            (layout.index[name], kind) for _, name, kind in columns if name in layout.index
        ]
        self.pkid_at = layout.index["pkid"]
        self.cluster_at = layout.index.get("globalCallId_ClusterID")
        self.default_cluster = cluster
        self.fixed = (file.pk if file else None, layout_id)
        q = connection.ops.quote_name
        self.table = q(self.model._meta.db_table)
        self.names = [*FIXED, *(col for col, _ in self.columns)]
        self.target = ", ".join(map(q, [*self.names, "ingested_at"]))
        self.returning = (
            ' ON CONFLICT ("cluster", "pkid") DO NOTHING RETURNING "id", "cluster", "pkid"'
        )
        self.postgres = connection.vendor == "postgresql"

    def key(self, row: Row) -> tuple[str, str]:
        values = row.values
        cluster = (values[self.cluster_at] if self.cluster_at is not None else "") or (
            self.default_cluster
        )
        return cluster[:64], values[self.pkid_at]

    def _tuples(self, rows: list[Row]) -> list[tuple[Any, ...]]:
        out = []
        positions = self.positions
        for row in rows:
            values = row.values
            typed = [
                values[i][:kind] if isinstance(kind, int) else (values[i] or None)
                for i, kind in positions
            ]
            out.append((*self.fixed, row.line, row.raw, *self.key(row), *typed))
        return out

    def insert(self, rows: list[Row]) -> list[StoredRecord]:
        data = self._tuples(rows)
        with connection.cursor() as cursor:
            returned = self._copy(cursor, data) if self.postgres else self._values(cursor, data)
        by_key = {(t[4], t[5]): row for t, row in zip(data, rows, strict=True)}
        stored = []
        for pk, cluster, pkid in returned:
            row = by_key[(cluster, pkid)]
            stored.append(StoredRecord(pk, row.values, row.line))
        stored.sort(key=lambda record: record.line)
        return stored

    def _copy(self, cursor: Any, data: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        # One staging table per column set: older generations lack some typed columns.
        digest = hashlib.sha1(" ".join(self.names).encode()).hexdigest()[:10]
        stage = f"ingest_stage_{self.model._meta.model_name}_{digest}"
        types = [
            *FIXED_SQL_TYPES,
            *("text" if isinstance(k, int) else "bigint" for _, k in self.columns),
        ]
        # Safe to skip the per-batch fsync: until the ingest record is marked done (a normal,
        # durable commit that also flushes these), a crash only means the file is ingested
        # again, and that stores exactly what is missing.
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ("
            + ", ".join(f'"{n}" {t}' for n, t in zip(self.names, types, strict=True))
            + ") ON COMMIT DELETE ROWS"
        )
        columns = ", ".join(f'"{n}"' for n in self.names)
        with cursor.cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
            for item in data:
                copy.write_row(item)
        select = ", ".join(
            f'to_timestamp(NULLIF("{n}", 0))' if (n, TIME) in self.columns else f'"{n}"'
            for n in self.names
        )
        cursor.execute(
            f"INSERT INTO {self.table} ({self.target}) SELECT {select}, now() FROM {stage}"
            + self.returning
        )
        return cursor.fetchall()

    def _values(self, cursor: Any, data: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        cells = ["%s"] * len(FIXED) + [
            "datetime(NULLIF(%s, '0'), 'unixepoch')" if kind == TIME else "%s"
            for _, kind in self.columns
        ]
        placeholder = "(" + ", ".join([*cells, "%s"]) + ")"
        sql = (
            f"INSERT INTO {self.table} ({self.target}) VALUES "
            + ", ".join([placeholder] * len(data))
            + self.returning
        )
        cursor.execute(sql, [value for item in data for value in (*item, now)])
        return cursor.fetchall()


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


def _webhook_hook() -> BatchHook:
    from webhooks.trigger import webhooks_trigger

    return webhooks_trigger


def _store_rows(
    *,
    reader: CucmReader,
    writer: _Writer,
    cdr_file: CdrFile,
    on_stored: BatchHook | None,
    progress: Callable[[int], None] | None,
) -> _Counts:
    counts = _Counts()
    errors: list[dict[str, Any]] = cdr_file.errors
    batch: list[Row] = []
    next_lease = time.monotonic() + LEASE.total_seconds() / 4

    def flush() -> None:
        nonlocal next_lease
        with transaction.atomic():
            stored = writer.insert(batch)
            if stored and on_stored is not None:
                on_stored(writer.layout, stored)
        counts.stored += len(stored)
        counts.duplicate += len(batch) - len(stored)
        if progress is not None:
            progress(len(batch))
        batch.clear()
        if time.monotonic() > next_lease:
            CdrFile.objects.filter(pk=cdr_file.pk).update(lease_until=timezone.now() + LEASE)
            next_lease = time.monotonic() + LEASE.total_seconds() / 4

    for item in reader:
        if isinstance(item, RowError):
            counts.rejected += 1
            if len(errors) < MAX_STORED_ERRORS:
                errors.append({"line": item.line, "reason": item.reason})
            if progress is not None:
                progress(1)
            continue
        if not item.values[writer.pkid_at]:
            counts.rejected += 1
            if len(errors) < MAX_STORED_ERRORS:
                errors.append({"line": item.line, "reason": "empty pkid"})
            continue
        batch.append(item)
        if len(batch) >= settings.CDR_BATCH_SIZE:
            flush()
    if batch:
        flush()
    return counts


def cdr_file_create(*, name: str, source: str, path: Path | None = None) -> CdrFile:
    return CdrFile.objects.create(
        name=name, source=source, path=str(path) if path else "", status=CdrFile.Status.QUEUED
    )


def cdr_file_ingest(
    *,
    path: Path,
    source: str,
    name: str | None = None,
    cdr_file: CdrFile | None = None,
    evaluate_webhooks: bool = True,
    on_stored: BatchHook | None = None,
    progress: Callable[[int], None] | None = None,
) -> CdrFile:
    """Ingest one file and return its ingest record (done, duplicate or failed).

    Bad rows are rejected with their line number and the rest of the file is stored; a file
    that is not a CUCM file at all fails with a reason. Database errors propagate: the batches
    already committed stay, and ingesting the file again stores only what is missing.
    """
    name = name or path.name
    if cdr_file is None:
        cdr_file = cdr_file_create(name=name, source=source, path=path)
    sha256, size = file_digest(path)
    cdr_file.sha256, cdr_file.size = sha256, size
    cdr_file.started_at = cdr_file.started_at or timezone.now()
    cdr_file.status = CdrFile.Status.PROCESSING
    cdr_file.errors = []
    parsed_name = parse_file_name(name)
    cdr_file.cluster = parsed_name.cluster if parsed_name else ""
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
        on_stored = _webhook_hook()
    with open_binary(path) as stream:
        try:
            reader = CucmReader(stream)
        except NotCucmFile as exc:
            return _finish(cdr_file, CdrFile.Status.FAILED, error=str(exc))
        except (OSError, EOFError) as exc:
            return _finish(cdr_file, CdrFile.Status.FAILED, error=_read_error(stream, exc))
        layout = reader.layout
        cdr_file.kind = layout.kind
        writer = _Writer(layout, layout_get_or_create(layout), cdr_file, cdr_file.cluster)
        if parsed_name and parsed_name.kind != layout.kind:
            log.warning("%s is named %s but its header is %s", name, parsed_name.kind, layout.kind)
        try:
            counts = _store_rows(
                reader=reader,
                writer=writer,
                cdr_file=cdr_file,
                on_stored=on_stored if layout.kind == "cdr" else None,
                progress=progress,
            )
        except (OSError, EOFError) as exc:
            # A gzip stream cut short or a read error: what was stored stays stored.
            cdr_file.error = f"after line {reader.line}: {_read_error(stream, exc)}"
            counts = None
    if counts is None:
        return _finish(cdr_file, CdrFile.Status.FAILED, error=cdr_file.error)
    # A retried ingest counts what an interrupted attempt stored as duplicates: each record
    # is still stored, and fires, once.
    cdr_file.stored_count = counts.stored
    cdr_file.duplicate_count = counts.duplicate
    cdr_file.rejected_count = counts.rejected
    note = "" if reader.rows_seen else "the file has a header but no records"
    return _finish(cdr_file, CdrFile.Status.DONE, error=note)


def _read_error(stream: object, exc: BaseException) -> str:
    if isinstance(stream, gzip.GzipFile):
        return f"corrupt or truncated gzip file ({exc})"
    return f"cannot read the file ({exc})"


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
