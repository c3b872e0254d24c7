"""Liveness of the parts an operator cares about: database, broker, beat."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from calltelemetry.celery import app


def _database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
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


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "broker": _broker()}
    healthy = all(ok for ok, _ in checks.values())
    body = {
        "status": "ok" if healthy else "down",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
    }
    return JsonResponse(body, status=200 if healthy else 503)
