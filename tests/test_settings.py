import subprocess
import sys

import pytest
from django.urls import reverse


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_TIMEOUT", "soon"),
        ("WEBHOOK_RETRY_SCHEDULE", "5,x,30"),
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/33"),
        ("LICENSE_PUBLIC_KEYS", "[1,2]"),
        ("PORT", "70000"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("CELERY_BROKER_URL", "carrier-pigeon://x"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    result = run_check({name: value})
    assert result.returncode != 0
    assert name in result.stderr


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client, settings, tmp_path) -> None:
    from calltelemetry.health import beat_heartbeat

    settings.DATA_DIR = tmp_path
    beat_heartbeat()
    response = client.get(reverse("healthz"))
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert response.status_code == (200 if all(c["ok"] for c in body["checks"].values()) else 503)
