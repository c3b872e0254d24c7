"""The delivery log never shows a blank body: before the first send (the trigger stores no
body) the API and the admin show a preview rendered from the record, labelled as not sent."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from cdr.models import Cdr
from tests.test_webhooks import (
    ingest,
    make_webhook,
    reference_payload,
    reference_row,
    write_cdr_file,
)
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("premium")]


@pytest.fixture
def pending(settings: Any, httpserver: HTTPServer, tmp_path: Path) -> Delivery:
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(httpserver.url_for("/hook"), meta={"event": "missed call"})
    ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [reference_row()]))
    delivery = Delivery.objects.get()
    assert delivery.body == "" and delivery.status == Delivery.Status.PENDING
    return delivery


def test_the_api_previews_the_body_of_a_delivery_not_sent_yet(
    pending: Delivery, api: APIClient
) -> None:
    detail = api.get(f"/api/v1/deliveries/{pending.pk}/").json()
    assert detail["body_preview"] is True
    assert json.loads(detail["body"]) == reference_payload()
    deliveries_attempt(ids=[pending.pk])
    detail = api.get(f"/api/v1/deliveries/{pending.pk}/").json()
    assert detail["body_preview"] is False
    assert detail["body"] == Delivery.objects.get().body
    assert json.loads(detail["body"]) == reference_payload()


def test_a_delivery_whose_record_is_gone_has_no_preview(pending: Delivery, api: APIClient) -> None:
    Cdr.objects.all().delete()
    detail = api.get(f"/api/v1/deliveries/{pending.pk}/").json()
    assert (detail["body"], detail["body_preview"]) == ("", False)


def test_the_admin_labels_the_preview_as_not_sent(pending: Delivery, admin_client: Client) -> None:
    url = reverse("admin:webhooks_delivery_change", args=[pending.pk])
    page = admin_client.get(url).content.decode()
    assert "Not sent yet" in page and "StandAloneCluster" in page
    deliveries_attempt(ids=[pending.pk])
    page = admin_client.get(url).content.decode()
    assert "Not sent yet" not in page and "StandAloneCluster" in page
