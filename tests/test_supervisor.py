"""`make run`'s supervisor: dead or stuck children are started again, with back-off."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from calltelemetry import supervisor as supervisor_module
from calltelemetry.health import (
    beat_heartbeat,
    heartbeat_path,
    watcher_heartbeat,
    watcher_heartbeat_path,
)
from calltelemetry.supervisor import (
    STUCK_CHECKS,
    WORKER_POOLS,
    Child,
    Supervisor,
    commands,
    sweeper_stuck,
    watcher_stuck,
)

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def run_for(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.02)


def test_a_child_that_dies_is_started_again_with_a_growing_back_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    crash = Child("crash", [sys.executable, "-c", "import sys; sys.exit(3)"])
    steady = Child("steady", SLEEP)
    supervisor = Supervisor([crash, steady], backoff_first=0.2, backoff_max=0.8)
    supervisor.start()
    assert steady.proc is not None
    steady_pid = steady.proc.pid
    try:
        run_for(supervisor, 3.5)
    finally:
        supervisor.stop()
    out = capsys.readouterr().out
    delays = [
        line.rsplit("again in ", 1)[1]
        for line in out.splitlines()
        if "crash exited with code 3" in line
    ]
    assert delays[:4] == ["0.2 s", "0.4 s", "0.8 s", "0.8 s"]
    assert "crash started again" in out
    # One crashing child no longer takes the others down with it.
    assert steady.proc.pid == steady_pid and "steady" not in out


def test_a_child_that_ran_long_enough_restarts_at_the_first_back_off() -> None:
    crash = Child("crash", [sys.executable, "-c", "import sys; sys.exit(1)"])
    supervisor = Supervisor([crash], backoff_first=0.1, stable_after=0.0)
    supervisor.start()
    run_for(supervisor, 1.0)
    supervisor.stop()
    assert crash.quick_deaths == 1


def test_a_stuck_child_is_stopped_and_started_again(capsys: pytest.CaptureFixture[str]) -> None:
    stuck = Child(
        "watcher", SLEEP, stuck=lambda child: "no heartbeat" if child.uptime() > 0.3 else None
    )
    supervisor = Supervisor([stuck], backoff_first=0.1)
    supervisor.start()
    assert stuck.proc is not None
    first = stuck.proc
    try:
        run_for(supervisor, 1.0)
    finally:
        supervisor.stop()
    assert first.poll() is not None  # terminated, not left running beside its successor
    assert stuck.proc is not None and stuck.proc.pid != first.pid
    out = capsys.readouterr().out
    assert "watcher is stuck (no heartbeat), stopped it; starting it again in 0.1 s" in out


@pytest.mark.django_db
def test_a_watcher_is_stuck_when_its_heartbeat_goes_stale(tmp_path: Path, settings: Any) -> None:
    settings.DATA_DIR = tmp_path
    settings.WATCHER_STALE_SECONDS = 10
    watcher = Child("watcher", SLEEP)
    watcher.started_at = time.monotonic()
    assert watcher_stuck(watcher) is None  # just started: it has not had time to scan
    watcher.started_at = time.monotonic() - 30
    assert "never completed a scan" in (watcher_stuck(watcher) or "")
    watcher_heartbeat()
    assert watcher_stuck(watcher) is None
    old = time.time() - 20
    os.utime(watcher_heartbeat_path(), (old, old))
    assert "stale after 10 s" in (watcher_stuck(watcher) or "")
    settings.WATCHER_STALE_SECONDS = 0
    assert watcher_stuck(watcher) is None


def test_the_worker_is_stuck_when_the_sweeper_stops(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DATA_DIR = tmp_path
    monkeypatch.setattr(supervisor_module, "SWEEPER_STUCK_AFTER", 10.0)
    worker = Child("worker", SLEEP)
    worker.started_at = time.monotonic() - 30
    assert "sweeper has not run for 10 s" in (sweeper_stuck(worker) or "")
    beat_heartbeat()
    assert sweeper_stuck(worker) is None
    old = time.time() - 20
    os.utime(heartbeat_path(), (old, old))
    assert sweeper_stuck(worker) is not None
    worker.started_at = time.monotonic()
    assert sweeper_stuck(worker) is None  # just started: give the sweeper time to run
    # The pool that serves the sweeper's `celery` queue is the one watched.
    queues = commands(8000)["worker"]
    assert "celery" in queues[queues.index("--queues") + 1].split(",")
    assert STUCK_CHECKS == {"watcher": watcher_stuck, "worker": sweeper_stuck}


def test_make_run_serves_ingest_and_deliveries_from_separate_worker_pools() -> None:
    pools = {
        name: command[command.index("--queues") + 1].split(",")
        for name, command in commands(8000).items()
        if "worker" in command
    }
    assert pools == {"ingest-worker": ["ingest"], "worker": ["celery", "webhooks"]}
    assert sum(concurrency for _, concurrency in WORKER_POOLS.values()) <= 3  # two cores
