"""The production files: docker-compose.yml's structure and .env.example's coverage.

No Docker engine runs in CI, so the compose file is checked as data: the services the
product promises, their health checks and restart policies, the volumes they share, the
published ports and the one-shot migration everything else waits for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

APP_SERVICES = {"migrate", "web", "worker", "ingest-worker", "beat", "watcher", "sftp"}
LONG_RUNNING = {"postgres", "redis", "web", "worker", "ingest-worker", "beat", "watcher", "sftp"}
SPEC_SETTINGS = [
    "DATA_DIR",
    "PORT",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CDR_INCOMING_DIR",
    "WEBHOOK_TIMEOUT",
    "WEBHOOK_RETRY_SCHEDULE",
    "WEBHOOK_ALLOWED_NETWORKS",
    "LICENSE_PUBLIC_KEYS",
]
SFTP_SETTINGS = ["SFTP_HOST", "SFTP_PORT", "SFTP_MAX_FILE_BYTES", "SFTP_MAX_SESSIONS"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command(service: dict[str, Any]) -> str:
    value = service["command"]
    return " ".join(value) if isinstance(value, list) else value


def test_every_service_of_the_appliance_is_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == LONG_RUNNING | {"migrate"}
    services = compose["services"]
    assert "gunicorn calltelemetry.wsgi" in command(services["web"])
    assert "--queues celery,webhooks" in command(services["worker"])
    assert "--queues ingest" in command(services["ingest-worker"])
    assert "beat" in command(services["beat"])
    assert command(services["watcher"]) == "python manage.py watch_cdr"
    assert command(services["sftp"]) == "python manage.py run_sftp"
    assert command(services["migrate"]) == "python manage.py migrate --noinput"


def test_ingest_and_deliveries_run_in_separate_worker_pools(compose: dict[str, Any]) -> None:
    served: list[str] = []
    for name, service in compose["services"].items():
        argv = service.get("command") or []
        if "worker" in argv:
            queues = argv[argv.index("--queues") + 1].split(",")
            concurrency = int(argv[argv.index("--concurrency") + 1])
            served += queues
            assert "ingest" not in queues or queues == ["ingest"], name
            assert concurrency <= 2, name  # sized for a two-core appliance
    assert sorted(served) == ["celery", "ingest", "webhooks"]  # each queue exactly once


def test_web_sees_the_heartbeats_the_worker_and_watcher_write(compose: dict[str, Any]) -> None:
    # /healthz reads DATA_DIR/beat-heartbeat and DATA_DIR/watcher-heartbeat.
    for name in ("web", "worker", "watcher"):
        assert "data:/data" in compose["services"][name]["volumes"], name
    watcher_check = " ".join(compose["services"]["watcher"]["healthcheck"]["test"])
    assert "/data/watcher-heartbeat" in watcher_check


def test_redis_keeps_queued_tasks(compose: dict[str, Any]) -> None:
    redis = command(compose["services"]["redis"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis


def test_migrations_run_once_and_everything_waits_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["restart"] == "on-failure"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in APP_SERVICES - {"migrate"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert "migrate" not in command(services[name]), name


def test_long_running_services_restart_and_have_health_checks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        service = compose["services"][name]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        assert not service["healthcheck"].get("disable"), name


def test_sftp_is_published_on_port_22_and_web_on_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["sftp"]["ports"] == ["22:2222"]
    assert services["sftp"]["environment"]["SFTP_PORT"] == "2222"
    assert services["web"]["ports"] == ["${PORT:-8000}:8000"]
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"web", "sftp"}  # the database and broker stay private


def test_volumes_are_named_and_the_drop_folder_is_shared(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"postgres-data", "redis-data", "incoming", "data"}
    services = compose["services"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    for name in ("web", "worker", "ingest-worker", "watcher", "sftp"):
        assert "incoming:/data/incoming" in services[name]["volumes"], name
        assert services[name]["environment"]["CDR_INCOMING_DIR"] == "/data/incoming", name
    # The SFTP host keys must survive a new container, or CUCM refuses the changed key.
    assert "data:/data" in services["sftp"]["volumes"]


def test_app_containers_use_postgres_and_redis(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://"), name
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0", name
        assert compose["services"][name]["env_file"] == ".env", name


def test_env_example_names_every_documented_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    missing = [name for name in SPEC_SETTINGS + SFTP_SETTINGS if name not in named]
    assert missing == []


def test_env_example_sets_the_production_secrets_and_nothing_compose_owns() -> None:
    text = (ROOT / ".env.example").read_text()
    active = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert active == {"SECRET_KEY", "ALLOWED_HOSTS", "POSTGRES_PASSWORD"}


def test_the_image_runs_as_a_non_root_user_and_keeps_secrets_out() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER app$", dockerfile, re.MULTILINE)
    assert "pip install -r requirements.txt" in dockerfile
    assert "collectstatic --noinput" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", ".venv", "var"} <= set(ignored)


def test_the_readme_explains_cucm_and_compose() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Receiving files from CUCM (SFTP)" in readme
    assert "## Production deployment (docker compose)" in readme


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    import shutil
    import subprocess

    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's)")
    # As an operator would: the compose file next to a .env made from .env.example.
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    env_file = (ROOT / ".env.example").read_text()
    env_file += (
        "\nSECRET_KEY=" + "x" * 50 + "\nALLOWED_HOSTS=cdr.example.com\nPOSTGRES_PASSWORD=secret\n"
    )
    (tmp_path / ".env").write_text(env_file)
    result = subprocess.run(
        [binary, "config", "-q"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
