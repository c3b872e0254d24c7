from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.fail(f"sample CUCM files not found at {SAMPLES}")
    return SAMPLES


def test_database_url() -> str:
    """The URL of the database this test run uses, for processes the tests start."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def premium(db: None, settings: object) -> Iterator[str]:
    """A valid premium license (cdr_webhooks, 50 webhooks) signed by a key of the test's own,
    installed and trusted; child processes get the key through process_env."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from licensing.selectors import license_cache_clear
    from licensing.services import license_install
    from licensing.verification import issue, key_id, public_key_b64

    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    settings.LICENSE_PUBLIC_KEYS = {kid: public_key_b64(key.public_key())}  # type: ignore[attr-defined]
    text = issue(
        key,
        kid=kid,
        customer="Test Voice Ltd",
        expires_at=datetime.now(UTC) + timedelta(days=365),
        features=["cdr_webhooks"],
        limits={"webhooks": 50},
        grace_days=14,
    )
    license_cache_clear()
    license_install(text=text)
    yield text
    license_cache_clear()


@pytest.fixture
def process_env(
    transactional_db: None, premium: str, settings: object, tmp_path: Path
) -> dict[str, str]:
    """Environment for a child process (worker, watcher) that shares this test's database,
    broker and drop folder."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    settings.CDR_INCOMING_DIR = incoming  # type: ignore[attr-defined]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "calltelemetry.settings_test",
        "DATABASE_URL": test_database_url(),
        "CDR_INCOMING_DIR": str(incoming),
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LICENSE_PUBLIC_KEYS": json.dumps(settings.LICENSE_PUBLIC_KEYS),  # type: ignore[attr-defined]
        "PYTHONUNBUFFERED": "1",
    }


class Worker:
    def __init__(self, env: dict[str, str], queues: str, concurrency: int, pool: str) -> None:
        self.ready = threading.Event()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "calltelemetry",
                "worker",
                "--loglevel",
                "INFO",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--pool",
                pool,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            raise RuntimeError("Celery worker did not start:\n" + "".join(self.output[-40:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if " ready." in line:
                self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_worker(process_env: dict[str, str]) -> Iterator[object]:
    """Start real Celery worker processes on the configured broker (Redis in CI, the file
    broker otherwise), after emptying the queues of anything an earlier test left."""
    from calltelemetry.celery import app

    with app.connection_for_write() as conn:
        for queue in ("celery", "ingest", "webhooks"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # a queue that does not exist yet has nothing to purge
                pass
    workers: list[Worker] = []

    def start(
        queues: str = "celery,ingest,webhooks", concurrency: int = 2, pool: str = "prefork"
    ) -> Worker:
        worker = Worker(process_env, queues, concurrency, pool)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@contextmanager
def broker_unreachable() -> Iterator[None]:
    """Point this process's Celery publisher at a port where nothing listens."""
    import kombu.pools

    from calltelemetry.celery import app

    def reset_pools() -> None:
        # Publisher connections are cached in kombu's global pools and in the app.
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    real = app.conf.broker_url, app.conf.task_publish_retry, app.conf.broker_transport_options
    reset_pools()
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    app.conf.broker_transport_options = {}
    app.conf.task_publish_retry = False
    try:
        yield
    finally:
        reset_pools()
        app.conf.broker_url, app.conf.task_publish_retry, app.conf.broker_transport_options = real


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    # Ids are reused after a test's rollback; what a process cached about them must not be.
    from calltelemetry.caching import caches_clear

    caches_clear()
    yield
    caches_clear()


# API clients: a signed-in reader and a staff member (who may write).
@pytest.fixture
def user(db: None) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("viewer", password="pw")


@pytest.fixture
def staff(db: None) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("operator", password="pw", is_staff=True)


@pytest.fixture
def api(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff_api(staff: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff)
    return client
