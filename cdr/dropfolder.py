"""The drop folder: CUCM (through SFTP) or an operator puts files in; we ingest them.

Life of a file: `incoming/<name>` → claimed by an atomic rename to `incoming/.queue/` (only
one watcher can win the rename) with an ingest record in state `queued` → a Celery worker
claims the record (a lease in the database), ingests, and moves the file to `processed/` or
`failed/` (with a `.error` note). The record and the file in `.queue/` together are the
durable state: if the broker is down or a worker dies, the sweeper enqueues the file again.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from cdr.models import CdrFile
from cdr.services import LEASE, cdr_file_create, cdr_file_ingest

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
REQUEUE_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class Folders:
    incoming: Path
    queue: Path
    processed: Path
    failed: Path

    @classmethod
    def current(cls) -> Folders:
        incoming = Path(settings.CDR_INCOMING_DIR)
        folders = cls(incoming, incoming / ".queue", incoming / "processed", incoming / "failed")
        for folder in (folders.incoming, folders.queue, folders.processed, folders.failed):
            folder.mkdir(parents=True, exist_ok=True)
        return folders


def is_candidate(name: str) -> bool:
    # CUCM writes `_name` while a file is open; `.name` are our own and temp files.
    return not name.startswith(("_", ".")) and not name.endswith((".part", ".tmp", ".error"))


class Scanner:
    """Finds files that are complete: size and mtime unchanged across two scans and older
    than CDR_SETTLE_SECONDS (an upload in progress keeps changing both)."""

    def __init__(self, folders: Folders) -> None:
        self.folders = folders
        self.seen: dict[str, tuple[int, int]] = {}

    def complete(self, *, require_stable: bool = True) -> list[Path]:
        now = timezone.now().timestamp()
        ready: list[Path] = []
        current: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.folders.incoming))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            try:
                # Symbolic links are claimed too, so that the ingest refuses them with a
                # reason instead of leaving them in the folder unexplained.
                if not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                    continue
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            signature = (info.st_size, info.st_mtime_ns)
            current[entry.name] = signature
            settled = now - info.st_mtime >= settings.CDR_SETTLE_SECONDS
            stable = not require_stable or self.seen.get(entry.name) == signature
            if settled and stable:
                ready.append(Path(entry.path))
        self.seen = current
        return sorted(ready)


def file_claim(path: Path, *, source: str = "watcher") -> CdrFile | None:
    """Move a complete file into the queue and enqueue its ingest; None if another watcher
    took it first or it disappeared."""
    folders = Folders.current()
    prefix = f"{uuid.uuid4().hex}__"
    target = folders.queue / (prefix + name_on_disk(path.name, NAME_MAX - len(prefix)))
    try:
        os.rename(path, target)
    except FileNotFoundError:
        log.info("%s disappeared before it could be claimed", path.name)
        return None
    try:
        return file_enqueue(path=target, name=path.name, source=source)
    except Exception:
        # No ingest record means nobody would ever pick the file up: put it back.
        os.rename(target, path)
        raise


def file_enqueue(*, path: Path, name: str, source: str) -> CdrFile:
    from cdr.tasks import ingest_file

    with transaction.atomic():
        cdr_file = cdr_file_create(name=name, source=source, path=path)
        transaction.on_commit(lambda: _send(ingest_file, cdr_file.pk))
    return cdr_file


def _send(task: object, file_id: int) -> None:
    try:
        task.delay(file_id)  # type: ignore[attr-defined]
    except Exception as exc:  # the broker is down: the sweeper sends it when it is back
        log.warning("could not enqueue ingest of file %s: %s", file_id, exc)


def queued_file_ingest(*, file_id: int) -> CdrFile | None:
    """Run by the worker: claim the record, ingest the file, move it out of the queue."""
    now = timezone.now()
    claimed = (
        CdrFile.objects.filter(pk=file_id)
        .filter(
            Q(status=CdrFile.Status.QUEUED)
            | Q(status=CdrFile.Status.PROCESSING, lease_until__lt=now)
        )
        .update(
            status=CdrFile.Status.PROCESSING,
            lease_until=now + LEASE,
            attempts=F("attempts") + 1,
        )
    )
    if not claimed:
        return None
    cdr_file = CdrFile.objects.get(pk=file_id)
    path = Path(cdr_file.path)
    try:
        refusal = file_refusal(path)
    except FileNotFoundError:
        return _file_fail(cdr_file, f"the queued file {path} is gone")
    if refusal is None and cdr_file.attempts > MAX_ATTEMPTS:
        refusal = f"gave up after {MAX_ATTEMPTS} attempts; see the worker log"
    if refusal is not None:
        _file_fail(cdr_file, refusal)
    else:
        cdr_file = cdr_file_ingest(
            path=path, source=cdr_file.source, name=cdr_file.name, cdr_file=cdr_file
        )
    _file_retire(cdr_file)
    return cdr_file


def _file_fail(cdr_file: CdrFile, reason: str) -> CdrFile:
    cdr_file.status = CdrFile.Status.FAILED
    cdr_file.error = reason
    cdr_file.lease_until = None
    cdr_file.finished_at = timezone.now()
    cdr_file.save()
    return cdr_file


def file_refusal(path: Path) -> str | None:
    """Why the file at ``path`` must not be read, or None; raises FileNotFoundError.

    Only a regular file with a single name is ours to read. A symbolic link or a hard link
    in the drop folder is another file's content under our name (a link to /etc/shadow
    would be parsed, and its fields could surface in errors), so it is refused from its
    metadata alone (lstat), before anything opens it.
    """
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "refused without reading it: it is a symbolic link; drop the file itself"
    if not stat.S_ISREG(info.st_mode):
        return "refused without reading it: it is not a regular file"
    if info.st_nlink > 1:
        return (
            f"refused without reading it: it is a hard link ({info.st_nlink} names share its "
            "content); drop a copy of the file, not a link"
        )
    return None


# Bytes in one file name on the file systems we run on.
NAME_MAX = 255


def name_on_disk(name: str, room: int) -> str:
    """`name`, or if it takes more than `room` bytes, its start and end around a "…": a
    name as long as the folder holds must still fit with our prefixes and suffixes."""
    if len(name.encode()) <= room:
        return name
    keep = room - len("…".encode())
    head = name.encode()[: keep // 2].decode(errors="ignore")
    tail = name.encode()[len(name.encode()) - (keep - keep // 2) :].decode(errors="ignore")
    return f"{head}…{tail}"


def _file_retire(cdr_file: CdrFile) -> None:
    folders = Folders.current()
    failed = cdr_file.status == CdrFile.Status.FAILED
    folder = folders.failed if failed else folders.processed
    # Room for the ".<id>" of a name taken and the ".error" note beside it.
    name = name_on_disk(cdr_file.name, NAME_MAX - len(f".{cdr_file.pk}.error"))
    target = folder / name
    if target.exists():
        target = folder / f"{name}.{cdr_file.pk}"
    shutil.move(cdr_file.path, target)
    if failed:
        target.with_name(target.name + ".error").write_text(cdr_file.error + "\n")
    CdrFile.objects.filter(pk=cdr_file.pk).update(path=str(target))


def files_requeue_stale() -> int:
    """Enqueue again what a broker outage or a dead worker left behind."""
    from cdr.tasks import ingest_file

    now = timezone.now()
    queued = Q(status=CdrFile.Status.QUEUED) & (
        Q(lease_until__isnull=True, created_at__lt=now - REQUEUE_AFTER) | Q(lease_until__lt=now)
    )
    expired = Q(status=CdrFile.Status.PROCESSING, lease_until__lt=now)
    stale = list(CdrFile.objects.filter(queued | expired).values_list("pk", flat=True)[:500])
    # A queued file waits REQUEUE_AFTER again before the next resend, so a long backlog is
    # not flooded with copies of the same task.
    CdrFile.objects.filter(pk__in=stale, status=CdrFile.Status.QUEUED).update(
        lease_until=now + REQUEUE_AFTER
    )
    for file_id in stale:
        _send(ingest_file, file_id)
    return len(stale)
