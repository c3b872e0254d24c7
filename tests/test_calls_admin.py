from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from cdr.models import Cdr, Cmr
from tests.calls_fixtures import Calls, calls_build

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def calls(tmp_path: Path, settings: Any) -> Calls:
    return calls_build(tmp_path, settings)


def listed(response: object) -> set[int]:
    return {call.pk for call in response.context["cl"].result_list}  # type: ignore[attr-defined]


def test_calls_cannot_be_added_changed_or_deleted(admin_client: Client, calls: Calls) -> None:
    page = admin_client.get(reverse("admin:cdr_call_changelist"))
    assert page.status_code == 200
    assert reverse("admin:cdr_call_add").encode() not in page.content
    assert admin_client.get(reverse("admin:cdr_call_add")).status_code == 403
    detail = admin_client.get(reverse("admin:cdr_call_change", args=[calls.missed.pk]))
    assert b'name="_save"' not in detail.content
    delete = reverse("admin:cdr_call_delete", args=[calls.missed.pk])
    assert admin_client.get(delete).status_code == 403


def test_the_call_list_shows_the_facts_and_hides_merged_calls(
    admin_client: Client, calls: Calls
) -> None:
    page = admin_client.get(reverse("admin:cdr_call_changelist"))
    assert listed(page) == {
        calls.transferred.pk,
        calls.missed.pk,
        calls.voicemail.pk,
        calls.open.pk,
    }
    text = page.content.decode()
    assert "1001 → 2000" in text
    assert '<abbr title="answered">ans</abbr> <abbr title="transferred">xfer</abbr>' in text
    assert '<abbr title="missed">missed</abbr> <abbr title="reached voicemail">vm</abbr>' in text
    for column in ("caller → dialed", "answered by", "legs", "flags", "settled"):
        assert column in text.lower()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"answered__exact": "1"}, {"transferred"}),
        ({"missed__exact": "1"}, {"missed", "voicemail"}),
        ({"voicemail__exact": "1"}, {"voicemail"}),
        ({"settled": "yes"}, {"transferred", "missed", "voicemail"}),
        ({"settled": "no"}, {"open"}),
        ({"cluster": "West"}, {"voicemail"}),
        ({"q": "3000"}, {"transferred"}),  # answered by
        ({"q": "2000"}, {"transferred"}),  # dialed, and a leg's calling number
        ({"q": "8000"}, {"voicemail"}),  # a leg's final called number
        ({"q": "1002"}, {"missed"}),
        ({"q": "9999"}, set()),
    ],
)
def test_call_list_filters_and_number_search(
    admin_client: Client, calls: Calls, query: dict[str, str], expected: set[str]
) -> None:
    page = admin_client.get(reverse("admin:cdr_call_changelist"), query)
    assert page.status_code == 200
    assert listed(page) == {getattr(calls, name).pk for name in expected}


def test_the_call_page_links_every_leg_and_cmr(admin_client: Client, calls: Calls) -> None:
    page = admin_client.get(reverse("admin:cdr_call_change", args=[calls.transferred.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    legs = list(Cdr.objects.filter(call_ref=calls.transferred).order_by("origination_at"))
    links = [text.index(reverse("admin:cdr_cdr_change", args=[leg.pk])) for leg in legs]
    assert len(links) == 3 and links == sorted(links)  # in origination order
    for cmr in Cmr.objects.filter(call_ref=calls.transferred):
        assert reverse("admin:cdr_cmr_change", args=[cmr.pk]) in text
    assert "2.9" in text and "1001 → 3000" in text and "answered, transferred" in text


def test_cdr_and_cmr_pages_link_to_their_call(admin_client: Client, calls: Calls) -> None:
    call_url = reverse("admin:cdr_call_change", args=[calls.transferred.pk])
    leg = Cdr.objects.filter(call_ref=calls.transferred).first()
    cmr = Cmr.objects.filter(call_ref=calls.transferred).first()
    for page in (
        admin_client.get(reverse("admin:cdr_cdr_changelist")),
        admin_client.get(reverse("admin:cdr_cdr_change", args=[leg.pk])),
        admin_client.get(reverse("admin:cdr_cmr_changelist")),
        admin_client.get(reverse("admin:cdr_cmr_change", args=[cmr.pk])),
    ):
        assert page.status_code == 200
        assert f'<a href="{call_url}">call {calls.transferred.pk}</a>' in page.content.decode()


def test_a_record_of_a_merged_call_links_to_the_call_it_joined(
    admin_client: Client, calls: Calls
) -> None:
    leg = Cdr.objects.filter(call_ref=calls.missed).get()
    Cdr.objects.filter(pk=leg.pk).update(call_ref=calls.merged)
    page = admin_client.get(reverse("admin:cdr_cdr_change", args=[leg.pk])).content.decode()
    assert reverse("admin:cdr_call_change", args=[calls.transferred.pk]) in page
