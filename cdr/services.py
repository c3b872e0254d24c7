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
    epoch_to_datetime,
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


def _text(limit: int) -> Callable[[str], str]:
    return lambda value: value[:limit]


def _int(value: str) -> int | None:
    return int(value) if value else None


def _time(value: str) -> Any:
    return connection.ops.adapt_datetimefield_value(epoch_to_datetime(value))


# Typed columns: (model column, CUCM header name, conversion from the text as read).
CDR_COLUMNS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("call_manager_id", "globalCallID_callManagerId", _int),
    ("call_id", "globalCallID_callId", _int),
    ("orig_leg_id", "origLegCallIdentifier", _int),
    ("dest_leg_id", "destLegIdentifier", _int),
    ("origination_at", "dateTimeOrigination", _time),
    ("connect_at", "dateTimeConnect", _time),
    ("disconnect_at", "dateTimeDisconnect", _time),
    ("duration", "duration", _int),
    ("calling_party_number", "callingPartyNumber", _text(255)),
    ("original_called_party_number", "originalCalledPartyNumber", _text(255)),
    ("final_called_party_number", "finalCalledPartyNumber", _text(255)),
    ("last_redirect_dn", "lastRedirectDn", _text(255)),
    ("orig_device_name", "origDeviceName", _text(129)),
    ("dest_device_name", "destDeviceName", _text(129)),
    ("orig_cause_value", "origCause_value", _int),
    ("dest_cause_value", "destCause_value", _int),
)
CMR_COLUMNS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("call_manager_id", "globalCallID_callManagerId", _int),
    ("call_id", "globalCallID_callId", _int),
    ("node_id", "nodeId", _int),
    ("directory_num", "directoryNum", _text(255)),
    ("call_identifier", "callIdentifier", _int),
    ("stamp_at", "dateTimeStamp", _time),
    ("device_name", "deviceName", _text(129)),
    ("duration", "duration", _int),
    ("jitter", "jitter", _int),
    ("latency", "latency", _int),
    ("packets_lost", "numberPacketsLost", _int),
)


class _Writer:
    """Turns parsed rows of one layout into multi-row INSERTs that report what was new."""

    def __init__(self, layout: Layout, layout_id: int, file: CdrFile | None, cluster: str):
        self.layout = layout
        self.model: type[Model] = Cdr if layout.kind == "cdr" else Cmr
        columns = CDR_COLUMNS if layout.kind == "cdr" else CMR_COLUMNS
        present = [(col, name, conv) for col, name, conv in columns if name in layout.index]
        self.converters = [(layout.index[name], conv) for _, name, conv in present]
        self.pkid_at = layout.index["pkid"]
        self.cluster_at = layout.index.get("globalCallId_ClusterID")
        self.default_cluster = cluster
        names = ["file_id", "layout_id", "line", "raw", "ingested_at", "cluster", "pkid"]
        names += [col for col, _, _ in present]
        self.width = len(names)
        self.fixed = (file.pk if file else None, layout_id)
        table = connection.ops.quote_name(self.model._meta.db_table)
        self.prefix = (
            f"INSERT INTO {table} ({', '.join(map(connection.ops.quote_name, names))}) VALUES "
        )
        self.suffix = ' ON CONFLICT ("cluster", "pkid") DO NOTHING RETURNING "id", "pkid"'

    def key(self, row: Row) -> tuple[str, str]:
        values = row.values
        cluster = (values[self.cluster_at] if self.cluster_at is not None else "") or (
            self.default_cluster
        )
        return cluster, values[self.pkid_at]

    def insert(self, rows: list[Row]) -> list[StoredRecord]:
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        params: list[Any] = []
        by_pkid: dict[str, Row] = {}
        for row in rows:
            cluster, pkid = self.key(row)
            by_pkid.setdefault(pkid, row)
            values = row.values
            params += (*self.fixed, row.line, row.raw, now, cluster[:64], pkid)
            params += [conv(values[i]) for i, conv in self.converters]
        placeholder = "(" + ", ".join(["%s"] * self.width) + ")"
        sql = self.prefix + ", ".join([placeholder] * len(rows)) + self.suffix
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            returned = cursor.fetchall()
        stored = [
            StoredRecord(pk, by_pkid[pkid].values, by_pkid[pkid].line) for pk, pkid in returned
        ]
        stored.sort(key=lambda record: record.line)
        return stored


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
    from webhooks.services import webhooks_trigger

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
    )
    return cdr_file
