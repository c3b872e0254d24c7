from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from cdr.models import Cdr, CdrFile, Cmr
from cdr.services import cdr_file_ingest
from tests.test_parsing import EXPECTED

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def ingested(samples: Path) -> None:
    for relative in EXPECTED:
        cdr_file_ingest(path=samples / relative, source="replay", evaluate_webhooks=False)


def result_count(response: object) -> int:
    return response.context["cl"].result_count  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", ["cdrfile", "cdr", "cmr"])
def test_records_cannot_be_added_changed_or_deleted(admin_client: Client, model: str) -> None:
    page = admin_client.get(reverse(f"admin:cdr_{model}_changelist"))
    assert page.status_code == 200
    add = reverse(f"admin:cdr_{model}_add")
    assert add.encode() not in page.content
    assert admin_client.get(add).status_code == 403


def test_ingest_record_pages(admin_client: Client, ingested: None) -> None:
    page = admin_client.get(reverse("admin:cdr_cdrfile_changelist"))
    assert result_count(page) == 10
    assert b"cdr_cucmOHSUtest_02_202504181632_1" in page.content
    searched = admin_client.get(reverse("admin:cdr_cdrfile_changelist"), {"q": "cmr_cucmOHSU"})
    assert result_count(searched) == 1
    failed = admin_client.get(reverse("admin:cdr_cdrfile_changelist"), {"status__exact": "failed"})
    assert result_count(failed) == 0
    record = CdrFile.objects.get(name="cdr_cucmOHSUtest_02_202504181632_1")
    detail = admin_client.get(reverse("admin:cdr_cdrfile_change", args=[record.pk]))
    assert detail.status_code == 200
    assert b"91b610150d6f1910fc14ad90d32d07364904d85939a41340bac94d055f42270f" in detail.content
    assert b'name="_save"' not in detail.content


def test_row_errors_are_shown_line_by_line(
    admin_client: Client, samples: Path, tmp_path: Path
) -> None:
    source = samples / "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1"
    lines = source.read_bytes().split(b"\n")
    broken = tmp_path / "cdr_cucmOHSUtest_02_202504181633_2"
    broken.write_bytes(b"\n".join([*lines[:3], b'"a","<b>"', *lines[3:]]))
    record = cdr_file_ingest(path=broken, source="replay", evaluate_webhooks=False)
    detail = admin_client.get(reverse("admin:cdr_cdrfile_change", args=[record.pk]))
    html = detail.content.decode()
    assert "<tr><th>line 4</th><td><code>2 fields, expected 133</code></td></tr>" in html


def test_cdr_changelist_shows_decoded_columns(admin_client: Client, ingested: None) -> None:
    page = admin_client.get(reverse("admin:cdr_cdr_changelist"))
    assert page.status_code == 200
    assert result_count(page) == 24
    html = page.content.decode()
    assert "SIP 503 Service Unavailable" in html
    assert "User busy" in html
    assert "SEPCC7F750586B7" in html


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ({"q": "8486"}, 12),
        ({"q": "7203"}, 4),
        ({"q": "SIP_TO_SYZEFXIS"}, 6),
        ({"q": "8534716"}, 1),
        ({"q": "e4c90b4c-7c89-4c11-b06a-1ea5bd0c2855"}, 1),
        ({"q": "no-such-thing"}, 0),
        ({"answered": "yes"}, 7),
        ({"answered": "no"}, 17),
        ({"cluster": "cucmOHSUtest"}, 3),
        ({"dest_cause_value": "17"}, 3),
        ({"origination_at__year": "2020", "origination_at__month": "12"}, 18),
    ],
)
def test_cdr_search_and_filters(
    admin_client: Client, ingested: None, query: dict[str, str], count: int
) -> None:
    page = admin_client.get(reverse("admin:cdr_cdr_changelist"), query)
    assert page.status_code == 200
    assert result_count(page) == count


def test_cdr_detail_decodes_and_lists_every_field(admin_client: Client, ingested: None) -> None:
    call = Cdr.objects.get(pkid="ed56fecd-bd2d-48d4-ae03-7ee3766d6048")
    page = admin_client.get(reverse("admin:cdr_cdr_change", args=[call.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "10.248.64.14" in html  # origIpAddr, decoded
    assert "Normal call clearing" in html
    assert "April 18, 2025, 4:32 p.m." in html
    assert html.count("<tr><th>") == 133
    assert "<tr><th>pkid</th><td><code>ed56fecd-bd2d-48d4-ae03-7ee3766d6048</code>" in html


def test_cmr_pages(admin_client: Client, ingested: None) -> None:
    page = admin_client.get(reverse("admin:cdr_cmr_changelist"))
    assert result_count(page) == 17
    assert b'<td class="field-mos_metric">3.70</td>' in page.content  # MLQKmn=3.7002
    assert result_count(admin_client.get(page.request["PATH_INFO"], {"q": "8850"})) == 3
    assert result_count(admin_client.get(page.request["PATH_INFO"], {"q": "SEP007E9579F737"})) == 2
    cmr = Cmr.objects.get(pkid="60e07196-5c4f-407d-8c0b-01c8ebf8e164")
    detail = admin_client.get(reverse("admin:cdr_cmr_change", args=[cmr.pk]))
    html = detail.content.decode()
    assert "<tr><th>VoRxCodec</th><td><code>G.711 u-la</code></td></tr>" in html
    assert "<tr><th>varVQMetrics</th>" in html
    assert "SEPCC7F750586B7" in html


def test_changelists_do_not_query_per_row(admin_client: Client, samples: Path) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(model: str) -> int:
        admin_client.get(reverse(f"admin:cdr_{model}_changelist"))  # warm per-process caches
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(reverse(f"admin:cdr_{model}_changelist")).status_code == 200
        return len(captured)

    first = samples / "cucm12-panos1962"
    cdr_file_ingest(
        path=first / "cdr_StandAloneCluster_02_202012260557_476630",
        source="replay",
        evaluate_webhooks=False,
    )
    cdr_file_ingest(
        path=first / "cmr_StandAloneCluster_02_202012260632_476659",
        source="replay",
        evaluate_webhooks=False,
    )
    few = {model: queries(model) for model in ("cdrfile", "cdr", "cmr")}
    for path in sorted(samples.rglob("c[dm]r_*")):
        cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
    assert {model: queries(model) for model in ("cdrfile", "cdr", "cmr")} == few
