"""Structured logs: one JSON object per line, with the ingest and delivery context."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from calltelemetry.logs import JsonFormatter
from cdr.models import Cdr
from cdr.services import cdr_file_ingest
from tests.conftest import ROOT
from tests.test_webhooks import make_webhook, reference_row, write_cdr_file
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery

SAMPLE = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260558_476631"


def records_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


def test_the_formatter_writes_one_json_object_with_the_context_fields() -> None:
    record = logging.LogRecord(
        "webhooks.delivery", logging.INFO, __file__, 1, "sent %s", ("x",), None
    )
    record.webhook, record.delivery, record.status_code, record.latency_ms = 3, 7, 200, 12.5
    record.unrelated = "not copied"

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "INFO",
        "logger": "webhooks.delivery",
        "message": "sent x",
        "webhook": 3,
        "delivery": 7,
        "status_code": 200,
        "latency_ms": 12.5,
    }


def test_an_exception_stays_on_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.django_db
def test_an_ingest_logs_its_file_cluster_and_status(
    samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cdr.services")
    cdr_file_ingest(path=samples / SAMPLE, source="replay", evaluate_webhooks=False)

    (record,) = records_of(caplog, "cdr.services")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["file"] == Path(SAMPLE).name
    assert entry["cluster"] == "StandAloneCluster"
    assert entry["status"] == "done"
    assert entry["message"].startswith(f"ingested {Path(SAMPLE).name}: done, ")


@pytest.mark.django_db
@pytest.mark.usefixtures("premium")
def test_a_delivery_attempt_logs_webhook_delivery_record_and_outcome(
    tmp_path: Path, httpserver: HTTPServer, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = make_webhook(httpserver.url_for("/hook"))
    cdr_file_ingest(
        path=write_cdr_file(
            tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [reference_row()]
        ),
        source="replay",
    )
    delivery = Delivery.objects.get()
    caplog.set_level(logging.INFO, logger="webhooks.delivery")

    deliveries_attempt(ids=[delivery.pk])

    (record,) = records_of(caplog, "webhooks.delivery")
    entry = json.loads(JsonFormatter().format(record))
    cdr = Cdr.objects.get()
    assert {k: entry[k] for k in entry if k not in ("time", "message", "latency_ms")} == {
        "level": "INFO",
        "logger": "webhooks.delivery",
        "webhook": webhook.pk,
        "delivery": delivery.pk,
        "event_id": delivery.event_id,
        "cluster": cdr.cluster,
        "pkid": cdr.pkid,
        "status": "succeeded",
        "attempt": 1,
        "status_code": 200,
        "error_class": None,
    }
    assert entry["latency_ms"] >= 0


def test_log_format_json_makes_every_line_json() -> None:
    import os

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, logging; django.setup(); logging.getLogger('x').warning('hi')",
        ],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "calltelemetry.settings",
            "LOG_FORMAT": "json",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr)["message"] == "hi"


def test_a_bad_log_format_stops_start_up_naming_it() -> None:
    import os

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, "LOG_FORMAT": "xml"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr
