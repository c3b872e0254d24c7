"""One operator journey in a real headless Chromium: log in, create a webhook with two
conditions and a header, replay a CDR file, and see the hit and the delivery."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from pytest_httpserver import HTTPServer

from tests.test_webhooks import reference_row, write_cdr_file
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery, Webhook

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
    ),
]


def test_an_operator_creates_a_webhook_and_sees_it_fire(
    live_server: Any,
    premium: str,
    httpserver: HTTPServer,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls here are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/crm").respond_with_data("ok")
    get_user_model().objects.create_superuser("operator", "", "a-long-password")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "a-long-password")
        with page.expect_navigation():
            page.click("input[type=submit]")
        page.goto(f"{live_server.url}/admin/webhooks/webhook/add/")
        page.fill("#id_name", "Missed calls to reception")
        page.fill("#id_url", httpserver.url_for("/crm"))
        page.fill("#id_meta", '{"event": "missed call"}')
        page.select_option("#id_conditions-0-field", "dateTimeConnect")
        page.select_option("#id_conditions-0-operator", "eq")
        page.fill("#id_conditions-0-value", "Never")
        page.click("#conditions-group .add-row a")
        page.select_option("#id_conditions-1-field", "finalCalledPartyNumber")
        page.select_option("#id_conditions-1-operator", "in")
        page.fill("#id_conditions-1-value", "1000,1001")
        page.click("#headers-group .add-row a")
        page.fill("#id_headers-0-name", "Authorization")
        page.fill("#id_headers-0-value", "Bearer crm-token")
        with page.expect_navigation():
            page.click("input[name=_save]")
        assert "was added successfully" in page.locator("ul.messagelist").inner_text()

        call_command(
            "replay_cdr",
            str(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()])),
        )
        deliveries_attempt(ids=[Delivery.objects.get().pk])

        page.goto(f"{live_server.url}/admin/webhooks/webhook/")
        row = page.locator("#result_list tbody tr").first.inner_text()
        assert "Missed calls to reception" in row and "\t1\t" in row
        page.goto(f"{live_server.url}/admin/webhooks/delivery/")
        assert "Succeeded" in page.locator("#result_list").inner_text()
        page.screenshot(path=str(tmp_path / "deliveries.png"))
        browser.close()
    webhook = Webhook.objects.get()
    assert (webhook.hit_count, webhook.delivered_count) == (1, 1)
    request = httpserver.log[0][0]
    assert request.headers["Authorization"] == "Bearer crm-token"
