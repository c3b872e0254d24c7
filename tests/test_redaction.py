"""Credentials in a webhook URL are never shown: masked for staff, hidden from everyone else."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from tests.test_webhooks import ingest, make_webhook, reference_row, write_cdr_file
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery, DeliveryAttempt, Webhook
from webhooks.redaction import MASK, MaskedUrl, text_redacted, url_redacted, url_restored

SECRET_URL = "https://crm-user:crm-pass@crm.example.com/hook?api_key=K3Y&tenant=acme&token=T0K"
SHOWN = f"https://{MASK}@crm.example.com/hook?api_key={MASK}&tenant=acme&token={MASK}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URL, SHOWN),
        ("https://crm.example.com/hook", "https://crm.example.com/hook"),
        (
            "https://crm.example.com/hook?tenant=acme&page=2",
            "https://crm.example.com/hook?tenant=acme&page=2",
        ),
        ("http://only-user@10.0.0.5:8080/x", f"http://{MASK}@10.0.0.5:8080/x"),
        (
            "https://h/x?X-Amz-Signature=abc&sig=1&password=p&client_secret=s&code=c",
            f"https://h/x?X-Amz-Signature={MASK}&sig={MASK}&password={MASK}"
            f"&client_secret={MASK}&code={MASK}",
        ),
    ],
)
def test_url_redacted_masks_userinfo_and_secret_query_values(url: str, shown: str) -> None:
    assert url_redacted(url) == shown
    for secret in ("crm-user", "crm-pass", "K3Y", "T0K"):
        assert secret not in url_redacted(url)


def test_text_redacted_masks_credentials_inside_an_error_message() -> None:
    text = "GET http://u:p4ss@host/x?access_token=abc&x=1 failed: api_key=zzz refused"
    shown = text_redacted(text)
    assert "p4ss" not in shown and "abc" not in shown and "zzz" not in shown
    assert "x=1" in shown and "host/x" in shown


def test_url_restored_keeps_the_stored_url_only_for_its_unchanged_masked_form() -> None:
    assert url_restored(SHOWN, stored=SECRET_URL) == SECRET_URL
    assert url_restored("https://new.example.com/", stored=SECRET_URL) == "https://new.example.com/"
    with pytest.raises(MaskedUrl):
        url_restored(SHOWN.replace("/hook", "/other"), stored=SECRET_URL)
    with pytest.raises(MaskedUrl):
        url_restored(SHOWN, stored=None)


# --- API -----------------------------------------------------------------------------------


@pytest.fixture
def webhook(premium: str) -> Webhook:
    return make_webhook(SECRET_URL, name="CRM")


def test_only_staff_see_destinations_and_never_in_clear(
    webhook: Webhook, api: APIClient, staff_api: APIClient
) -> None:
    reader = api.get(f"/api/v1/webhooks/{webhook.pk}/").json()
    assert reader["url"] is None
    staff = staff_api.get("/api/v1/webhooks/").json()["results"][0]
    assert staff["url"] == SHOWN
    for listing in (api, staff_api):
        text = listing.get("/api/v1/webhooks/").content.decode()
        assert "crm-pass" not in text and "K3Y" not in text and "T0K" not in text


def test_the_masked_url_sent_back_keeps_the_stored_one(
    webhook: Webhook, staff_api: APIClient
) -> None:
    shown = staff_api.get(f"/api/v1/webhooks/{webhook.pk}/").json()
    body = {
        "name": shown["name"],
        "url": shown["url"],
        "enabled": True,
        "conditions": [],
        "headers": [],
    }
    response = staff_api.put(f"/api/v1/webhooks/{webhook.pk}/", body, format="json")
    assert response.status_code == 200, response.data
    webhook.refresh_from_db()
    assert webhook.url == SECRET_URL

    changed = {**body, "url": shown["url"].replace("/hook", "/other")}
    response = staff_api.put(f"/api/v1/webhooks/{webhook.pk}/", changed, format="json")
    assert response.status_code == 400
    assert MASK in response.json()["url"][0]
    webhook.refresh_from_db()
    assert webhook.url == SECRET_URL


def test_a_new_webhook_cannot_be_created_with_the_mask_in_its_url(
    premium: str, staff_api: APIClient
) -> None:
    body = {"name": "x", "url": SHOWN, "conditions": [], "headers": []}
    response = staff_api.post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 400
    assert not Webhook.objects.exists()


@pytest.fixture
def sent(premium: str, settings: Any, tmp_path: Path, httpserver: HTTPServer) -> Delivery:
    """A delivery sent to a receiver whose URL carries credentials."""
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/hook").respond_with_data("no", status=500)
    url = httpserver.url_for("/hook").replace("://", "://bob:hunter2@") + "?api_key=K3Y"
    make_webhook(url, name="CRM")
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202501010000_1", [reference_row()]))
    delivery = Delivery.objects.get()
    deliveries_attempt(ids=[delivery.pk])
    return delivery


def test_attempt_logs_show_the_destination_masked_to_staff_and_not_at_all_to_others(
    sent: Delivery, api: APIClient, staff_api: APIClient
) -> None:
    stored = DeliveryAttempt.objects.get().url
    assert stored.endswith("api_key=K3Y")  # sent as configured
    staff = staff_api.get(f"/api/v1/deliveries/{sent.pk}/").json()
    assert staff["attempts"][0]["url"] == url_redacted(stored)
    assert staff["attempts"][0]["url"].endswith(f"/hook?api_key={MASK}")
    assert "hunter2" not in str(staff) and "K3Y" not in str(staff)
    reader = api.get(f"/api/v1/deliveries/{sent.pk}/").json()
    assert reader["attempts"][0]["url"] is None
    assert "hunter2" not in str(reader) and "K3Y" not in str(reader)


# --- admin ---------------------------------------------------------------------------------


def test_the_admin_never_puts_url_credentials_on_a_page(
    sent: Delivery, admin_client: Client
) -> None:
    webhook = Webhook.objects.get()
    pages = [
        reverse("admin:webhooks_webhook_changelist"),
        reverse("admin:webhooks_webhook_change", args=[webhook.pk]),
        reverse("admin:webhooks_delivery_changelist"),
        reverse("admin:webhooks_delivery_change", args=[sent.pk]),
    ]
    for page in pages:
        html = admin_client.get(page).content.decode()
        assert "hunter2" not in html and "K3Y" not in html, page
    change = admin_client.get(pages[1]).content.decode()
    assert f"api_key={MASK}" in change


def test_saving_the_admin_form_unchanged_keeps_the_stored_url(
    webhook: Webhook, admin_client: Client
) -> None:
    page = reverse("admin:webhooks_webhook_change", args=[webhook.pk])
    form = admin_client.get(page).context["adminform"].form
    data = {
        "name": webhook.name,
        "url": form.initial["url"],
        "enabled": "on",
        "meta": "{}",
        "conditions-TOTAL_FORMS": "0",
        "conditions-INITIAL_FORMS": "0",
        "headers-TOTAL_FORMS": "0",
        "headers-INITIAL_FORMS": "0",
    }
    response = admin_client.post(page, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    webhook.refresh_from_db()
    assert webhook.url == SECRET_URL
