"""The drop-folder watcher and an ingest worker across a real PostgreSQL or Redis restart.

The shared servers are never touched: each test starts a throwaway server of its own (a
PostgreSQL cluster initdb-ed into a temporary directory, run as the `postgres` OS user when
the tests run as root; a redis-server), and skips when the server binaries are missing.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Worker

FIRST = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630"
SECOND = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260558_476631"


def _server_binaries() -> Path | None:
    found = [Path(p).parent for p in (shutil.which("pg_ctl"),) if p]
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
    )
    for directory in [*found, *reversed(candidates)]:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temporary directory, driven with pg_ctl."""

    def __init__(self, binaries: Path, root: Path, as_user: list[str]) -> None:
        self.binaries, self.root, self.as_user = binaries, root, as_user
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.as_user, str(self.binaries / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{tool} failed: {result.stderr}\n{log.read_text() if log.exists() else ''}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "30", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="calltelemetry-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres OS user to run a cluster as")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = Cluster(binaries, root, as_user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except RuntimeError:
            pass  # already stopped, or never started
        shutil.rmtree(root, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not reached within {timeout} s")


def file_status(url: str, name: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT status FROM cdr_cdrfile WHERE name = %s", [name]).fetchone()
    except psycopg.OperationalError:
        return None
    return row[0] if row else None


def healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 503 still carries the checks
        return json.load(error)


@pytest.mark.slow
def test_watcher_worker_and_web_recover_from_a_postgres_restart_while_the_folder_is_idle(
    cluster: Cluster, samples: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    incoming = data / "incoming"
    incoming.mkdir(parents=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "calltelemetry.settings_test",
        "DATABASE_URL": cluster.url,
        # A file broker of the test's own: nothing else consumes these tasks.
        "CELERY_BROKER_URL": "filesystem://",
        "DATA_DIR": str(data),
        "CDR_INCOMING_DIR": str(incoming),
        "CDR_SETTLE_SECONDS": "0.1",
        "CDR_WATCH_INTERVAL": "0.2",
        "WATCHER_STALE_SECONDS": "1.5",
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, "manage.py"]
    migrated = subprocess.run(
        [*manage, "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    worker = Worker(env, "celery,ingest", 1, "prefork")
    log = (tmp_path / "processes.log").open("w")
    watcher = subprocess.Popen(
        [*manage, "watch_cdr"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "calltelemetry.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def watcher_check() -> dict[str, Any]:
        return healthz(port)["checks"]["watcher"]

    try:
        # Every process holds a database connection once one file went through.
        shutil.copy(samples / FIRST, incoming)
        wait_for(lambda: file_status(cluster.url, Path(FIRST).name) == "done", 30, "first ingest")
        wait_for(lambda: _answers(port), 20, "gunicorn answers")
        assert healthz(port)["checks"]["database"]["ok"] is True
        assert watcher_check()["ok"] is True

        cluster.stop()
        wait_for(lambda: not watcher_check()["ok"], 10, "/healthz reports the watcher stalled")
        assert "cannot reach the database" in watcher_check()["detail"]
        cluster.start()
        time.sleep(1)  # the folder stays idle for a few rounds after the restart

        shutil.copy(samples / SECOND, incoming)
        wait_for(
            lambda: file_status(cluster.url, Path(SECOND).name) == "done",
            10,
            "ingest of a file dropped after the restart",
        )
        wait_for(lambda: watcher_check()["ok"], 5, "the watcher heartbeat is fresh again")
        assert healthz(port)["checks"]["database"]["ok"] is True
    except AssertionError:
        log.flush()
        print((tmp_path / "processes.log").read_text()[-3000:])
        print("".join(worker.output[-40:]))
        raise
    finally:
        for proc in (watcher, web):
            proc.terminate()
            proc.wait(20)
        log.close()
        worker.stop()


def _answers(port: int) -> bool:
    try:
        healthz(port)
    except OSError:
        return False
    return True


class Redis:
    """A redis-server of the test's own, without persistence, on a free port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis() -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = Redis(binary)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_watcher_and_worker_recover_from_a_broker_restart_while_the_folder_is_idle(
    redis: Redis, samples: Path, process_env: dict[str, str], tmp_path: Path
) -> None:
    from cdr.models import CdrFile

    incoming = Path(process_env["CDR_INCOMING_DIR"])
    env = {
        **process_env,
        "CELERY_BROKER_URL": redis.url,
        "DATA_DIR": str(tmp_path),
        "CDR_SETTLE_SECONDS": "0.1",
        "CDR_WATCH_INTERVAL": "0.2",
    }
    worker = Worker(env, "celery,ingest", 1, "prefork")
    log = (tmp_path / "watcher.log").open("w")
    watcher = subprocess.Popen(
        [sys.executable, "manage.py", "watch_cdr"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def done(name: str) -> bool:
        return CdrFile.objects.filter(name=name, status=CdrFile.Status.DONE).exists()

    try:
        shutil.copy(samples / FIRST, incoming)
        wait_for(lambda: done(Path(FIRST).name), 30, "first ingest")
        redis.stop()
        time.sleep(1)
        redis.start()  # empty: what it held is gone, as after a crash without persistence
        time.sleep(1)
        shutil.copy(samples / SECOND, incoming)
        wait_for(lambda: done(Path(SECOND).name), 20, "ingest of a file dropped after the restart")
    except AssertionError:
        log.flush()
        print((tmp_path / "watcher.log").read_text()[-3000:])
        print("".join(worker.output[-60:]))
        raise
    finally:
        watcher.terminate()
        watcher.wait(20)
        log.close()
        worker.stop()


def test_workers_never_give_up_reconnecting_to_the_broker() -> None:
    from calltelemetry.celery import app

    assert app.conf.broker_connection_max_retries is None
