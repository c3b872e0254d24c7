from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from cdr.services import cdr_file_ingest
from tests.test_webhooks import make_webhook, reference_row, write_cdr_file
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db


def test_the_admin_index_shows_ingest_and_delivery_health(
    admin_client: Client, samples: Path, premium: str, tmp_path: Path
) -> None:
    cdr_file_ingest(
        path=samples / "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630",
        source="replay",
        evaluate_webhooks=False,
    )
    make_webhook("https://crm.example.com/hook")
    cdr_file_ingest(
        path=write_cdr_file(tmp_path / "cdr_East_01_202311061457_1", [reference_row()]),
        source="replay",
    )
    Delivery.objects.update(status=Delivery.Status.FAILED)
    page = admin_client.get("/admin/").content.decode()
    assert "Records ingested today</th><td>7 in 2 files" in page
    assert "0 pending · <strong>1 failed</strong> · 0 succeeded" in page
    assert "Last file from StandAloneCluster" in page
    assert "Last file from East" in page
