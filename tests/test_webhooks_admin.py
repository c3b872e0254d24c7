from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from pytest_httpserver import HTTPServer

from licensing.selectors import license_cache_clear
from tests.test_webhooks import make_webhook, reference_row, write_cdr_file
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery, Header, Webhook

pytestmark = pytest.mark.django_db


def form(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "Missed calls",
        "url": "https://crm.example.com/hooks/cdr",
        "enabled": "on",
        "meta": '{"event": "missed call"}',
        "new_secret": "",
        "conditions-TOTAL_FORMS": "2",
        "conditions-INITIAL_FORMS": "0",
        "conditions-0-field": "dateTimeConnect",
        "conditions-0-operator": "eq",
        "conditions-0-value": "Never",
        "conditions-0-order": "0",
        "conditions-1-field": "finalCalledPartyNumber",
        "conditions-1-operator": "in",
        "conditions-1-value": "1000, 1001",
        "conditions-1-order": "1",
        "headers-TOTAL_FORMS": "1",
        "headers-INITIAL_FORMS": "0",
        "headers-0-name": "Authorization",
        "headers-0-value": "Bearer s3cr3t",
    }
    data.update(overrides)
    return data


def add(admin_client: Client, **overrides: Any) -> Any:
    return admin_client.post(reverse("admin:webhooks_webhook_add"), form(**overrides), follow=True)


def test_create_a_webhook_with_conditions_and_a_header(admin_client: Client, premium: str) -> None:
    response = add(admin_client, generate_secret="on")
    assert response.status_code == 200
    webhook = Webhook.objects.get()
    conditions = list(webhook.conditions.values_list("field", "operator", "value"))
    assert conditions == [
        ("dateTimeConnect", "eq", 0),
        ("finalCalledPartyNumber", "in", ["1000", "1001"]),
    ]
    assert webhook.headers.get().value == "Bearer s3cr3t"
    assert webhook.meta == {"event": "missed call"}
    assert webhook.secret.startswith("whsec_")
    assert webhook.secret in response.content.decode()  # shown once, in the message
    page = admin_client.get(
        reverse("admin:webhooks_webhook_change", args=[webhook.pk])
    ).content.decode()
    assert webhook.secret not in page and "s3cr3t" not in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conditions-0-field": "nosuchField"}, "Select a valid choice"),
        ({"conditions-1-operator": "gt"}, "gt does not apply to finalCalledPartyNumber"),
        (
            {
                "conditions-0-field": "duration",
                "conditions-0-operator": "gt",
                "conditions-0-value": "long",
            },
            "is not a whole number",
        ),
        ({"headers-0-value": "Bearer x\r\nX-Evil: 1"}, "must not contain CR or LF"),
        ({"headers-0-name": "webhook-signature"}, "set by the appliance"),
        ({"url": "http://169.254.169.254/latest"}, "cloud metadata"),
        ({"url": "ftp://crm.example.com/"}, "must start with http:// or https://"),
        ({"meta": "[1, 2]"}, "meta must be a JSON object"),
        ({"new_secret": "whsec_short"}, "base64"),
    ],
)
def test_bad_input_is_refused_with_the_reason(
    admin_client: Client, premium: str, overrides: dict[str, str], message: str
) -> None:
    response = add(admin_client, **overrides)
    assert message in response.content.decode()
    assert Webhook.objects.count() == 0


def test_without_a_license_the_admin_refuses_to_save(admin_client: Client, settings: Any) -> None:
    settings.LICENSE_PUBLIC_KEYS = {"other": base64.b64encode(b"\x01" * 32).decode()}
    license_cache_clear()
    response = add(admin_client)
    assert "license" in response.content.decode().lower()
    assert Webhook.objects.count() == 0


def test_editing_keeps_a_header_value_left_empty(admin_client: Client, premium: str) -> None:
    add(admin_client)
    webhook = Webhook.objects.get()
    header = webhook.headers.get()
    data = form(
        **{
            "conditions-TOTAL_FORMS": "0",
            "headers-INITIAL_FORMS": "1",
            "headers-0-id": str(header.pk),
            "headers-0-webhook": str(webhook.pk),
            "headers-0-value": "",
        }
    )
    response = admin_client.post(reverse("admin:webhooks_webhook_change", args=[webhook.pk]), data)
    assert response.status_code == 302
    assert Header.objects.get().value == "Bearer s3cr3t"


def test_actions_send_a_test_event_enable_and_disable(
    admin_client: Client, premium: str, httpserver: HTTPServer, settings: Any
) -> None:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/hook").respond_with_data("ok")
    webhook = make_webhook(httpserver.url_for("/hook"))
    url = reverse("admin:webhooks_webhook_changelist")
    response = admin_client.post(
        url, {"action": "send_test_event", "_selected_action": [webhook.pk]}, follow=True
    )
    assert "HTTP 200" in response.content.decode()
    assert len(httpserver.log) == 1
    admin_client.post(url, {"action": "disable", "_selected_action": [webhook.pk]})
    assert not Webhook.objects.get().enabled
    admin_client.post(url, {"action": "enable", "_selected_action": [webhook.pk]})
    assert Webhook.objects.get().enabled


def test_enable_action_stops_at_the_license_cap_with_the_apis_message(
    admin_client: Client, premium: str
) -> None:
    Webhook.objects.bulk_create(
        Webhook(name=f"hook {n}", url="https://crm.example.com/hook") for n in range(49)
    )
    spare = Webhook.objects.bulk_create(
        Webhook(name=f"spare {n}", url="https://crm.example.com/hook", enabled=False)
        for n in range(2)
    )
    url = reverse("admin:webhooks_webhook_changelist")
    response = admin_client.post(
        url, {"action": "enable", "_selected_action": [w.pk for w in spare]}, follow=True
    )
    assert Webhook.objects.filter(enabled=True).count() == 50  # one of the two, not both
    assert [str(m) for m in response.context["messages"]] == [
        "the license allows 50 enabled webhooks and 50 are enabled: "
        "disable one first, or save this one disabled"
    ]


def test_admin_form_refuses_enabling_beyond_the_cap_but_edits_an_enabled_one(
    admin_client: Client, premium: str
) -> None:
    Webhook.objects.bulk_create(
        Webhook(name=f"hook {n}", url="https://crm.example.com/hook") for n in range(50)
    )
    response = add(admin_client, name="One too many")
    assert "the license allows 50 enabled webhooks and 50 are enabled" in (
        response.content.decode()
    )
    assert not Webhook.objects.filter(name="One too many").exists()
    assert add(admin_client, name="Saved disabled", enabled="").status_code == 200
    assert Webhook.objects.get(name="Saved disabled").enabled is False


def test_the_delivery_log_shows_attempts_and_redelivers(
    admin_client: Client, premium: str, httpserver: HTTPServer, settings: Any, tmp_path: Path
) -> None:
    import ipaddress

    from cdr.services import cdr_file_ingest

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    httpserver.expect_request("/hook").respond_with_data("nope", status=500)
    webhook = make_webhook(httpserver.url_for("/hook"))
    Header.objects.create(webhook=webhook, name="X-Api-Key", value="k3y")
    cdr_file_ingest(
        path=write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]),
        source="replay",
    )
    delivery = Delivery.objects.get()
    deliveries_attempt(ids=[delivery.pk])
    listing = admin_client.get(reverse("admin:webhooks_delivery_changelist")).content.decode()
    assert delivery.event_id in listing and "HTTP 500" in listing
    detail = admin_client.get(
        reverse("admin:webhooks_delivery_change", args=[delivery.pk])
    ).content.decode()
    assert "nope" in detail and "k3y" not in detail
    response = admin_client.post(
        reverse("admin:webhooks_delivery_changelist"),
        {"action": "redeliver", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert "1 deliveries queued again" in response.content.decode()
    assert Delivery.objects.get().status == Delivery.Status.PENDING


def rows(kind: str, items: list[dict[str, str]]) -> dict[str, str]:
    data = {f"{kind}-TOTAL_FORMS": str(len(items)), f"{kind}-INITIAL_FORMS": "0"}
    for n, item in enumerate(items):
        data.update({f"{kind}-{n}-{key}": value for key, value in item.items()})
    return data


def test_the_admin_refuses_the_101st_condition_with_the_services_message(
    admin_client: Client, premium: str
) -> None:
    conditions = [
        {"field": "duration", "operator": "gt", "value": str(n), "order": str(n)}
        for n in range(101)
    ]
    response = add(admin_client, **rows("conditions", conditions))
    assert "at most 100 conditions" in response.content.decode()
    assert Webhook.objects.count() == 0
    assert add(admin_client, **rows("conditions", conditions[:100])).status_code == 200
    assert Webhook.objects.get().conditions.count() == 100


def test_the_admin_refuses_the_51st_header_with_the_services_message(
    admin_client: Client, premium: str
) -> None:
    headers = [{"name": f"X-Header-{n}", "value": "v"} for n in range(51)]
    response = add(admin_client, **rows("headers", headers))
    assert "at most 50 headers" in response.content.decode()
    assert Webhook.objects.count() == 0


def test_a_service_error_shows_on_its_inline_row(admin_client: Client, premium: str) -> None:
    # Header names ignore case: the service refuses the second one, the database would not.
    headers = [{"name": "X-Api-Key", "value": "a"}, {"name": "x-api-key", "value": "b"}]
    response = add(admin_client, **{"conditions-1-operator": "gt"}, **rows("headers", headers))
    conditions, header_rows = (i.formset for i in response.context["inline_admin_formsets"])
    assert conditions.forms[0].errors == {}
    assert "gt does not apply to finalCalledPartyNumber" in str(conditions.forms[1].errors)
    assert header_rows.forms[0].errors == {}
    assert header_rows.forms[1].errors["name"] == [
        "duplicate header 'x-api-key' (header names ignore case)"
    ]
    assert Webhook.objects.count() == 0


def test_the_admin_writes_conditions_and_headers_canonically(
    admin_client: Client, premium: str
) -> None:
    conditions = [
        {"field": "finalCalledPartyNumber", "operator": "in", "value": " 1000 ,1001", "order": "5"},
        {"field": "dateTimeConnect", "operator": "eq", "value": "Never", "order": "1"},
    ]
    headers = [{"name": "Authorization", "value": "  Bearer s3cr3t "}]
    add(admin_client, **rows("conditions", conditions), **rows("headers", headers))
    webhook = Webhook.objects.get()
    assert list(webhook.conditions.values_list("field", "operator", "value", "order")) == [
        ("dateTimeConnect", "eq", 0, 0),
        ("finalCalledPartyNumber", "in", ["1000", "1001"], 1),
    ]
    assert list(webhook.headers.values_list("name", "value")) == [
        ("Authorization", "Bearer s3cr3t")
    ]


def test_editing_through_the_service_deletes_rows_and_keeps_header_values_by_name(
    admin_client: Client, premium: str
) -> None:
    add(admin_client)
    webhook = Webhook.objects.get()
    first, second = webhook.conditions.order_by("order")
    header = webhook.headers.get()
    page = reverse("admin:webhooks_webhook_change", args=[webhook.pk])
    data = form(
        **{
            "conditions-INITIAL_FORMS": "2",
            "conditions-0-id": str(first.pk),
            "conditions-0-DELETE": "on",
            "conditions-1-id": str(second.pk),
            "headers-INITIAL_FORMS": "1",
            "headers-0-id": str(header.pk),
            "headers-0-name": "X-Renamed",
            "headers-0-value": "",
        }
    )
    response = admin_client.post(page, data)
    # A value left empty keeps the one stored under that name, and X-Renamed has none.
    assert "X-Renamed" in str(response.context["inline_admin_formsets"][1].formset.forms[0].errors)
    assert webhook.conditions.count() == 2
    data["headers-0-name"] = "Authorization"
    assert admin_client.post(page, data).status_code == 302
    assert list(webhook.conditions.values_list("field", "value")) == [
        ("finalCalledPartyNumber", ["1000", "1001"])
    ]
    assert list(webhook.headers.values_list("name", "value")) == [
        ("Authorization", "Bearer s3cr3t")
    ]
