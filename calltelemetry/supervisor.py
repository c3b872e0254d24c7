"""`make run`: prepare the embedded appliance and run all of its processes.

Migrates, creates the first admin user, then starts the web server, two Celery worker pools
(one for ingest, one for deliveries and the periodic sweeps, so a long ingest never holds up
a delivery), Celery beat, the drop-folder watcher and the SFTP receiver. Ctrl-C (or SIGTERM)
stops every process it started.

A child that dies is started again after a back-off that doubles with each quick death
(1 s, 2 s, 4 s … at most 60 s; a child that ran for a minute starts again at 1 s), so one
crash does not stop the appliance and a crash loop does not burn the CPU. A live child can
be stuck too: the watcher when its heartbeat goes stale (WATCHER_STALE_SECONDS), the worker
that runs the periodic sweeper when the sweeper's heartbeat does (SWEEPER_STUCK_AFTER, e.g.
every process hung on a receiver). It is stopped and started again the same way. Every
restart is logged with its reason.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import django

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# A child that ran this long before dying was healthy: its next restart is immediate again.
STABLE_AFTER = 60.0
STOP_TIMEOUT = 15.0
# The sweeper runs every 2 s between other tasks that last under a minute each: two minutes
# without it means the worker that serves the `celery` queue is stuck.
SWEEPER_STUCK_AFTER = 120.0

# (queues, concurrency) per worker pool. Ingest is CPU-bound and gets one process of the two
# cores; deliveries wait on the network and must never queue behind a file.
WORKER_POOLS: dict[str, tuple[str, int]] = {
    "ingest-worker": ("ingest", 1),
    "worker": ("celery,webhooks", 2),
}


def ensure_admin() -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
    password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    if generated:
        print(f"\n  Admin user created: {username} / {password}  (shown once)\n", flush=True)
    else:
        print(f"\n  Admin user created: {username}\n", flush=True)


def worker_command(name: str, queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "calltelemetry", "worker",
        "--loglevel", "INFO", "--queues", queues, "--concurrency", str(concurrency),
        # Two workers on one host need distinct node names.
        "--hostname", f"{name}@%h",
    ]  # fmt: skip


def commands(port: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "web": [
            py,
            "-m",
            "gunicorn",
            "calltelemetry.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--access-logfile",
            "-",
        ],
        **{
            name: worker_command(name, queues, concurrency)
            for name, (queues, concurrency) in WORKER_POOLS.items()
        },
        "beat": [py, "-m", "celery", "-A", "calltelemetry", "beat", "--loglevel", "INFO"],
        "watcher": [py, "manage.py", "watch_cdr"],
        "sftp": [py, "manage.py", "run_sftp"],
    }


def log(message: str) -> None:
    print(f"  supervisor: {message}", flush=True)


@dataclass
class Child:
    """One supervised process; ``stuck`` says why a live one must be restarted, if it must."""

    name: str
    command: list[str]
    stuck: Callable[[Child], str | None] | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command)
        self.started_at = time.monotonic()
        self.restart_at = None

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.children = {child.name: child for child in children}
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.stable_after = stable_after

    def start(self) -> None:
        for child in self.children.values():
            child.start()

    def _schedule_restart(self, child: Child, reason: str) -> None:
        if child.uptime() >= self.stable_after:
            child.quick_deaths = 0
        delay = min(self.backoff_max, self.backoff_first * 2**child.quick_deaths)
        child.quick_deaths += 1
        child.proc = None
        child.restart_at = time.monotonic() + delay
        log(f"{child.name} {reason}; starting it again in {delay:g} s")

    def check(self) -> None:
        """One round: restart what is due, notice what died or is stuck."""
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is None:
                if child.restart_at is not None and now >= child.restart_at:
                    child.start()
                    log(f"{child.name} started again")
                continue
            code = child.proc.poll()
            if code is not None:
                self._schedule_restart(child, f"exited with code {code}")
                continue
            problem = child.stuck(child) if child.stuck else None
            if problem is not None:
                child.stop()
                self._schedule_restart(child, f"is stuck ({problem}), stopped it")

    def stop(self) -> None:
        running = [c.proc for c in self.children.values() if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def watcher_stuck(child: Child) -> str | None:
    """A watcher gets WATCHER_STALE_SECONDS from its start to show its first heartbeat."""
    from django.conf import settings

    from calltelemetry.health import watcher_stalled

    if not settings.WATCHER_STALE_SECONDS or child.uptime() < settings.WATCHER_STALE_SECONDS:
        return None
    return watcher_stalled()


def sweeper_stuck(child: Child) -> str | None:
    from calltelemetry.health import heartbeat_age

    if child.uptime() < SWEEPER_STUCK_AFTER:
        return None
    age = heartbeat_age()
    if age is not None and age <= SWEEPER_STUCK_AFTER:
        return None
    return f"the periodic sweeper has not run for {SWEEPER_STUCK_AFTER:.0f} s"


# Which check tells that a live child is stuck; "worker" serves the `celery` queue.
STUCK_CHECKS: dict[str, Callable[[Child], str | None]] = {
    "watcher": watcher_stuck,
    "worker": sweeper_stuck,
}


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "calltelemetry.settings")
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    ensure_admin()
    settings.CDR_INCOMING_DIR.mkdir(parents=True, exist_ok=True)

    supervisor = Supervisor(
        [
            Child(name, command, STUCK_CHECKS.get(name))
            for name, command in commands(settings.PORT).items()
        ]
    )
    supervisor.start()
    print(
        f"\n  Call Telemetry is running: http://127.0.0.1:{settings.PORT}/admin/"
        f"\n  Drop CDR/CMR files into {settings.CDR_INCOMING_DIR}, or send them over SFTP"
        f" to port {settings.SFTP_PORT} as a CDR source (admin → CDR sources)"
        "\n  Press Ctrl-C to stop.\n",
        flush=True,
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping:
        supervisor.check()
        time.sleep(0.5)
    supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
