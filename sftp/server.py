"""The SFTP receiver CUCM delivers CDR/CMR files to (`manage.py run_sftp`).

Each CDR source logs in with its password and sees a virtual root `/` with no folders. A
file opened for writing there goes to a temporary file in `CDR_INCOMING_DIR/.sftp/<user>/`
(the drop folder's own file system, so publishing is one link) and, when the client closes
it, appears in the drop folder under its own name, where the watcher ingests it. A
connection that drops before the close leaves nothing behind.

`ls /` lists this source's deliveries since the receiver started (the latest 100) with size
and time: receipts that show an operator a test upload arrived. They cannot be read,
renamed or removed, because the files now belong to ingest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from django.conf import settings
from django.db import connection

from cdr.dropfolder import is_candidate
from cdr.parsing import parse_file_name
from sftp.models import CdrSource
from sftp.services import cdr_source_authenticate, cdr_source_record_upload
from sftp.throttle import LoginThrottle

log = logging.getLogger(__name__)

T = TypeVar("T")

# CUCM 12+ offers only the three CTR ciphers; the others serve operators' OpenSSH clients.
ENCRYPTION_ALGS = (
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
# CUCM's client verifies RSA (rsa-sha2-256/512) or ECDSA host keys; OpenSSH prefers Ed25519.
HOST_KEYS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("sftp_host_ed25519_key", "ssh-ed25519", {}),
    ("sftp_host_rsa_key", "ssh-rsa", {"key_size": 3072}),
)
RECEIPTS_KEPT = 100
STALE_UPLOAD_SECONDS = 86400.0
DIRECTORY_MODE = stat.S_IFDIR | 0o750
FILE_MODE = stat.S_IFREG | 0o440


def _event(event: str, level: int = logging.INFO, **fields: object) -> None:
    """One log line per session or file: `sftp <event> key=value …`, fields also as extras."""
    text = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in fields.items())
    log.log(level, "sftp %s %s", event, text, extra={"event": f"sftp.{event}", **fields})


async def _db(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run ORM code off the event loop, on a fresh connection closed at once (the loop's
    thread pool would otherwise keep one idle connection per thread forever)."""

    def call() -> T:
        try:
            return function(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


def host_keys_load(directory: Path) -> list[asyncssh.SSHKey]:
    """The receiver's host keys, created on first start and kept, so CUCM (which pins the
    key it first saw) keeps trusting the appliance across restarts and upgrades."""
    keys = []
    for filename, algorithm, options in HOST_KEYS:
        path = directory / filename
        if not path.exists():
            _host_key_create(path, algorithm, options)
        keys.append(asyncssh.read_private_key(path))
    return keys


def _host_key_create(path: Path, algorithm: str, options: dict[str, int]) -> None:
    key = asyncssh.generate_private_key(algorithm, **options)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    try:
        # A link never replaces: if another receiver started at the same moment, its key wins.
        os.link(partial, path)
        log.info("created SFTP host key %s (%s)", path, key.get_fingerprint())
    except FileExistsError:
        pass
    finally:
        partial.unlink()


@dataclass(frozen=True)
class Receipt:
    name: str
    size: int
    mtime: int


@dataclass
class Upload:
    name: str
    temp: Path
    fd: int
    size: int = 0
    too_large: bool = False
    started: float = field(default_factory=time.monotonic)


class Receiver:
    """Settings and shared state of one listening SFTP receiver."""

    def __init__(
        self,
        *,
        host_keys: list[asyncssh.SSHKey],
        incoming: Path,
        max_file_bytes: int,
        max_sessions: int,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.host_keys = host_keys
        self.incoming = incoming
        self.max_file_bytes = max_file_bytes
        self.max_sessions = max_sessions
        self.throttle = throttle or LoginThrottle()
        self.sessions: set[Session] = set()
        self.receipts: defaultdict[int, deque[Receipt]] = defaultdict(
            lambda: deque(maxlen=RECEIPTS_KEPT)
        )

    @classmethod
    def from_settings(cls) -> Receiver:
        return cls(
            host_keys=host_keys_load(Path(settings.DATA_DIR)),
            incoming=Path(settings.CDR_INCOMING_DIR),
            max_file_bytes=settings.SFTP_MAX_FILE_BYTES,
            max_sessions=settings.SFTP_MAX_SESSIONS,
        )

    def staging(self, username: str) -> Path:
        folder = self.incoming / ".sftp" / username
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def staging_clean(self, older_than: float = STALE_UPLOAD_SECONDS) -> int:
        """Remove temporary files a crashed receiver left behind; returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for path in (self.incoming / ".sftp").glob("*/*.part"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def publish(self, upload: Upload) -> Path:
        """Give a finished upload its name in the drop folder without replacing any file."""
        target = self.incoming / upload.name
        suffix = 0
        while True:
            try:
                os.link(upload.temp, target)
                break
            except FileExistsError:
                # CUCM resends a file after a failure; ingest spots duplicate content.
                suffix += 1
                target = self.incoming / f"{upload.name}.{suffix}"
        upload.temp.unlink()
        return target

    async def listen(self, host: str, port: int) -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            lambda: Session(self),
            host,
            port,
            server_host_keys=self.host_keys,
            sftp_factory=DropBox,
            allow_scp=False,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            encryption_algs=list(ENCRYPTION_ALGS),
            login_timeout=60,
            # Notices a CUCM that vanished mid-upload, so its temporary file is removed.
            keepalive_interval=30,
            keepalive_count_max=3,
        )


class Session(asyncssh.SSHServer):
    """One SSH connection: the session cap, password login with throttling, the log line."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.source: CdrSource | None = None
        self.username = ""
        self.peer = ""
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.peer = (conn.get_extra_info("peername") or ("?",))[0]
        if len(self.receiver.sessions) >= self.receiver.max_sessions:
            _event("refused", peer=self.peer, reason="too many sessions")
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many sessions")
            return
        self.receiver.sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.receiver.sessions:
            return
        self.receiver.sessions.discard(self)
        # Health checks and port scanners never send a username: not worth an INFO line.
        _event(
            "session",
            logging.INFO if self.username else logging.DEBUG,
            source=self.source.name if self.source else "",
            username=self.username,
            peer=self.peer,
            files=self.files,
            bytes=self.bytes,
            seconds=round(time.monotonic() - self.started, 3),
            reason=str(exc) if exc else "closed",
        )

    def begin_auth(self, username: str) -> bool:
        self.username = username
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        throttle = self.receiver.throttle
        wait = throttle.blocked_for(username, self.peer)
        if wait:
            _event("login", username=username, peer=self.peer, ok=False, throttled=round(wait))
            return False
        source = await _db(cdr_source_authenticate, username=username, password=password)
        if source is None:
            throttle.failure(username, self.peer)
            _event("login", username=username, peer=self.peer, ok=False)
            return False
        throttle.success(username, self.peer)
        self.source = source
        _event("login", username=username, peer=self.peer, ok=True, source=source.name)
        return True


def _refuse(reason: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(reason)


class DropBox(asyncssh.SFTPServer):
    """A source's write-only view: `/` and the files it uploads there, nothing else."""

    def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
        super().__init__(chan)
        session = chan.get_connection().get_owner()
        assert isinstance(session, Session) and session.source is not None
        self.session = session
        self.source: CdrSource = session.source
        self.receiver = session.receiver
        self.staging = self.receiver.staging(self.source.username)
        self.uploads: dict[str, Upload] = {}

    # --- paths: everything resolves to `/` or to one name directly inside it -------------

    def _name(self, path: bytes) -> str | None:
        """The file name a client path points at, or None for the root itself."""
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise asyncssh.SFTPInvalidFilename("file names must be UTF-8") from None
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _refuse("'..' is not allowed: your folder is /")
        if len(parts) > 1:
            raise _refuse("there are no folders here: write files directly into /")
        if not parts:
            return None
        name = parts[0]
        if "\0" in name or len(name.encode()) > 255:
            raise asyncssh.SFTPInvalidFilename("invalid file name")
        return name

    def map_path(self, path: bytes) -> bytes:
        # Every operation is answered from the virtual tree above, never from a real path;
        # an operation this class does not implement must fail instead of reaching the disk.
        raise _refuse("operation not allowed")

    def realpath(self, path: bytes) -> bytes:
        name = self._name(path)
        return b"/" if name is None else b"/" + name.encode()

    def _attrs(self, name: str | None) -> asyncssh.SFTPAttrs:
        if name is None:
            return asyncssh.SFTPAttrs(permissions=DIRECTORY_MODE, size=0, mtime=int(time.time()))
        upload = next((u for u in self.uploads.values() if u.name == name), None)
        if upload is not None:
            return asyncssh.SFTPAttrs(permissions=FILE_MODE, size=upload.size)
        for receipt in reversed(self.receiver.receipts[self.source.pk]):
            if receipt.name == name:
                return asyncssh.SFTPAttrs(
                    permissions=FILE_MODE, size=receipt.size, mtime=receipt.mtime
                )
        raise asyncssh.SFTPNoSuchFile(f"{name}: no such file")

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self._attrs(self._name(path))

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self._attrs(self._name(path))

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        if self._name(path) is not None:
            raise asyncssh.SFTPNoSuchFile("not a folder")
        yield asyncssh.SFTPName(b".", attrs=self._attrs(None))
        latest = {r.name: r for r in self.receiver.receipts[self.source.pk]}
        for receipt in sorted(latest.values(), key=lambda r: r.name):
            attrs = asyncssh.SFTPAttrs(
                permissions=FILE_MODE, size=receipt.size, mtime=receipt.mtime
            )
            yield asyncssh.SFTPName(receipt.name.encode(), attrs=attrs)

    def format_user(self, uid: int | None) -> str:
        return self.source.username

    def format_group(self, gid: int | None) -> str:
        return "cdr"

    # --- uploads ----------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> Upload:
        name = self._name(path)
        if name is None:
            raise asyncssh.SFTPFileIsADirectory("/ is a folder")
        if pflags & asyncssh.FXF_READ or not pflags & asyncssh.FXF_WRITE:
            raise _refuse("this folder is write-only: files go to ingest once closed")
        if not is_candidate(name):
            raise _refuse(f"{name}: names starting with _ or . or ending .part/.tmp are refused")
        expected = self.source.cluster_id
        parsed = parse_file_name(name)
        if expected and parsed and parsed.cluster != expected:
            _event("refused", source=self.source.name, file=name, reason="other cluster")
            raise _refuse(f"{name}: this login takes files of cluster {expected} only")
        temp = self.staging / f"{uuid.uuid4().hex}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        upload = Upload(name=name, temp=temp, fd=os.open(temp, flags, 0o640))
        self.uploads[temp.name] = upload
        return upload

    def write(self, file_obj: Upload, offset: int, data: bytes) -> int:
        end = offset + len(data)
        if file_obj.too_large or end > self.receiver.max_file_bytes:
            file_obj.too_large = True
            raise self._too_large(file_obj)
        os.pwrite(file_obj.fd, data, offset)
        file_obj.size = max(file_obj.size, end)
        return len(data)

    def _too_large(self, file_obj: Upload) -> asyncssh.SFTPError:
        limit = self.receiver.max_file_bytes
        return asyncssh.SFTPFailure(
            f"{file_obj.name}: not delivered, larger than {limit} bytes (SFTP_MAX_FILE_BYTES)"
        )

    def fstat(self, file_obj: Upload) -> asyncssh.SFTPAttrs:
        return asyncssh.SFTPAttrs(permissions=FILE_MODE, size=file_obj.size)

    def fsync(self, file_obj: Upload) -> None:
        os.fsync(file_obj.fd)

    async def close(self, file_obj: Upload) -> None:
        os.close(file_obj.fd)
        self.uploads.pop(file_obj.temp.name, None)
        seconds = round(time.monotonic() - file_obj.started, 3)
        # asyncssh also "closes" the files left open when the channel goes away; a closing
        # channel means the client is gone without asking for this close, so the upload is
        # incomplete. (A client that does not wait for the close's answer never learned the
        # file arrived either: CUCM resends.)
        interrupted = self.channel.is_closing()
        if file_obj.too_large or interrupted:
            file_obj.temp.unlink(missing_ok=True)
            reason = "too large" if file_obj.too_large else "interrupted"
            _event(
                "discarded",
                source=self.source.name,
                file=file_obj.name,
                bytes=file_obj.size,
                seconds=seconds,
                reason=reason,
            )
            if file_obj.too_large:
                raise self._too_large(file_obj)
            return
        target = self.receiver.publish(file_obj)
        now = time.time()
        self.receiver.receipts[self.source.pk].append(
            Receipt(file_obj.name, file_obj.size, int(now))
        )
        self.session.files += 1
        self.session.bytes += file_obj.size
        _event(
            "received",
            source=self.source.name,
            file=file_obj.name,
            stored_as=target.name,
            bytes=file_obj.size,
            seconds=seconds,
        )
        try:
            await _db(cdr_source_record_upload, source_id=self.source.pk, size=file_obj.size)
        except Exception as exc:  # the file is delivered; only the counters are late
            log.warning("sftp could not count the upload of %s: %s", file_obj.name, exc)

    def fsetstat(self, file_obj: Upload, attrs: asyncssh.SFTPAttrs) -> None:
        # Clients set times or modes after a put; the drop folder keeps its own, so agree.
        return None

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._attrs(self._name(path))

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._attrs(self._name(path))

    # --- everything else is refused -------------------------------------------------------

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        raise _refuse("this folder is write-only")

    def remove(self, path: bytes) -> None:
        raise _refuse("delivered files belong to ingest and cannot be removed")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        raise _refuse("renaming is not supported: upload under the final name")

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        raise _refuse("renaming is not supported: upload under the final name")

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise _refuse("folders cannot be created: write files directly into /")

    def rmdir(self, path: bytes) -> None:
        raise _refuse("folders cannot be removed")

    def readlink(self, path: bytes) -> bytes:
        raise _refuse("there are no links here")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise _refuse("links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise _refuse("links are not allowed")

    def statvfs(self, path: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    def fstatvfs(self, file_obj: object) -> None:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")
