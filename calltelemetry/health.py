"""Liveness of the parts an operator cares about: database, broker, beat, watcher.

Beat freshness is a heartbeat file, `DATA_DIR/beat-heartbeat`, touched by the periodic
sweeper task (scheduled by beat every 2 s, run by a worker). A fresh file therefore proves
the whole chain beat → broker → worker runs, in whichever process or container did it; a
file (not a cache or a table) works the same on SQLite and PostgreSQL, and needs only that
web and workers share DATA_DIR (docker-compose.yml mounts one volume there for all).

The drop-folder watcher touches `DATA_DIR/watcher-heartbeat` after every scan that also
reached the database, so a watcher that is stopped, hung, or cut off from the database
goes stale. A deployment without a watcher sets WATCHER_STALE_SECONDS=0 to skip that check
(`make run` and docker-compose.yml always run one).

Warnings are things the operator should fix that do not make the appliance unhealthy (the
answer stays 200): the apps register what they check from their AppConfig.ready(), since
this module must not import them (STYLE.md, "Dependency direction").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from calltelemetry.celery import app
from calltelemetry.sql import database_round_trip

log = logging.getLogger(__name__)

HEARTBEAT_NAME = "beat-heartbeat"
HEARTBEAT_STALE_AFTER = 30.0
WATCHER_HEARTBEAT_NAME = "watcher-heartbeat"

# Each returns the operator's warnings (sentences) at the time of the call, or none.
HealthWarnings = Callable[[], list[str]]
_warnings: list[HealthWarnings] = []


def health_warnings_register(check: HealthWarnings) -> None:
    """Add `check()`'s warnings to every `/healthz` answer (once, however often called)."""
    if check not in _warnings:
        _warnings.append(check)


def health_warnings() -> list[str]:
    """Every registered app's current warnings. A check that fails (say, tables not migrated
    yet) is a warning itself: it must not turn the health answer into an error page."""
    warnings: list[str] = []
    for check in _warnings:
        try:
            warnings += check()
        except Exception as exc:
            log.warning("health warning check %s failed", check.__qualname__, exc_info=True)
            warnings.append(f"a check could not run ({check.__qualname__}): {exc}")
    return warnings


def _age(path: Path) -> float | None:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def heartbeat_path() -> Path:
    return Path(settings.DATA_DIR) / HEARTBEAT_NAME


def beat_heartbeat() -> None:
    """Record that the periodic sweeper just ran."""
    heartbeat_path().touch()


def heartbeat_age() -> float | None:
    """Seconds since the sweeper last ran, or None if it never has."""
    return _age(heartbeat_path())


def watcher_heartbeat_path() -> Path:
    return Path(settings.DATA_DIR) / WATCHER_HEARTBEAT_NAME


def watcher_heartbeat() -> None:
    """Record that the watcher just scanned the drop folder and reached the database."""
    watcher_heartbeat_path().touch()


def watcher_heartbeat_age() -> float | None:
    """Seconds since the watcher's last complete round, or None if it never had one."""
    return _age(watcher_heartbeat_path())


def watcher_stalled() -> str | None:
    """Why the watcher looks stopped or stuck, or None when it is fine (or not expected)."""
    stale_after = settings.WATCHER_STALE_SECONDS
    if not stale_after:
        return None
    age = watcher_heartbeat_age()
    if age is None:
        return (
            "the drop-folder watcher has never completed a scan (is manage.py watch_cdr running?)"
        )
    if age > stale_after:
        return (
            f"the drop-folder watcher last completed a scan {age:.0f} s ago (stale after "
            f"{stale_after:.0f} s): it is stopped, hung, or cannot reach the database"
        )
    return None


def _database() -> tuple[bool, str]:
    try:
        database_round_trip()
        return True, "ok"
    except Exception as exc:  # any failure means "down", and the reason is the message
        return False, str(exc)


def _broker() -> tuple[bool, str]:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:
        return False, str(exc)


def _beat() -> tuple[bool, str]:
    age = heartbeat_age()
    if age is None:
        return False, "the sweeper has never run (is celery beat running, and a worker?)"
    if age > HEARTBEAT_STALE_AFTER:
        return (
            False,
            f"the sweeper last ran {age:.0f} s ago (stale after {HEARTBEAT_STALE_AFTER:.0f} s)",
        )
    return True, f"the sweeper ran {age:.1f} s ago"


def _watcher() -> tuple[bool, str]:
    problem = watcher_stalled()
    if problem is not None:
        return False, problem
    if not settings.WATCHER_STALE_SECONDS:
        return True, "not checked (WATCHER_STALE_SECONDS=0: no watcher in this deployment)"
    return True, f"the watcher completed a scan {watcher_heartbeat_age() or 0:.1f} s ago"


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": _database(),
        "broker": _broker(),
        "beat": _beat(),
        "watcher": _watcher(),
    }
    healthy = all(ok for ok, _ in checks.values())
    body = {
        "status": "ok" if healthy else "down",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
        # Only when the database answers: every warning so far is read from it.
        "warnings": health_warnings() if checks["database"][0] else [],
    }
    return JsonResponse(body, status=200 if healthy else 503)
