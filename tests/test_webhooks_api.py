from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from calltelemetry.caching import caches_clear
from cdr.models import Cdr
from cdr.services import cdr_file_ingest
from licensing.selectors import license_cache_clear
from tests.test_parsing import EXPECTED
from tests.test_webhooks import (
    ingest,
    make_webhook,
    reference_payload,
    reference_row,
    write_cdr_file,
)
from webhooks.delivery import MASK, deliveries_attempt, generate_secret, secret_problem
from webhooks.models import Condition, Delivery, Header, Webhook

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def local(settings: Any) -> None:
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 1.0


@pytest.fixture
def unlicensed(db: None, settings: Any) -> None:
    settings.LICENSE_PUBLIC_KEYS = {"other": base64.b64encode(b"\x01" * 32).decode()}
    license_cache_clear()


@pytest.fixture
def stored_samples(db: None, samples: Path) -> None:
    for relative in EXPECTED:
        cdr_file_ingest(path=samples / relative, source="replay", evaluate_webhooks=False)


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Missed calls",
        "url": "https://crm.example.com/hook",
        "enabled": True,
        "meta": {"event": "missed call"},
        "conditions": [
            {"field": "DATETIMECONNECT", "operator": "eq", "value": "Never"},
            {"field": "duration", "operator": "gt", "value": "300"},
        ],
        "headers": [{"name": "Authorization", "value": "Bearer s3cr3t"}],
        **overrides,
    }


def create(client: APIClient, **overrides: Any) -> Any:
    return client.post("/api/v1/webhooks/", body(**overrides), format="json")


# --- CRUD -----------------------------------------------------------------------------------


def test_create_stores_nested_conditions_canonically_and_masks_headers(
    premium: str, staff_api: APIClient
) -> None:
    response = create(staff_api)
    assert response.status_code == 201, response.data
    data = response.json()
    assert data["conditions"] == [
        {"field": "dateTimeConnect", "operator": "eq", "value": 0},
        {"field": "duration", "operator": "gt", "value": 300},
    ]
    assert data["headers"] == [{"name": "Authorization", "value": MASK}]
    assert (data["has_secret"], data["secret"], data["hit_count"]) == (False, None, 0)
    webhook = Webhook.objects.get(pk=data["id"])
    assert list(webhook.conditions.values_list("field", "operator", "value", "order")) == [
        ("dateTimeConnect", "eq", 0, 0),
        ("duration", "gt", 300, 1),
    ]
    assert list(webhook.headers.values_list("name", "value")) == [
        ("Authorization", "Bearer s3cr3t")
    ]


def test_list_retrieve_and_filter(premium: str, staff_api: APIClient, api: APIClient) -> None:
    first = create(staff_api).json()
    create(staff_api, name="Long calls", enabled=False)
    listed = api.get("/api/v1/webhooks/").json()
    assert listed["count"] == 2
    assert [w["name"] for w in listed["results"]] == ["Long calls", "Missed calls"]
    assert api.get("/api/v1/webhooks/?enabled=false").json()["count"] == 1
    assert api.get("/api/v1/webhooks/?name=missed").json()["results"][0]["id"] == first["id"]
    shown = api.get(f"/api/v1/webhooks/{first['id']}/").json()
    assert shown["conditions"] == first["conditions"] and "secret" not in shown


def test_put_replaces_lists_and_keeps_the_secret_and_echoed_header_values(
    premium: str, staff_api: APIClient
) -> None:
    created = create(staff_api, secret=SECRET).json()
    url = f"/api/v1/webhooks/{created['id']}/"
    replaced = body(
        name="Renamed",
        conditions=[{"field": "finalcalledpartynumber", "operator": "in", "value": "1000, 1001"}],
        headers=[
            {"name": "Authorization", "value": MASK},
            {"name": "X-Tenant", "value": "  acme  "},
        ],
    )
    response = staff_api.put(url, replaced, format="json")
    assert response.status_code == 200, response.data
    webhook = Webhook.objects.get()
    assert webhook.name == "Renamed" and webhook.secret == SECRET
    assert list(webhook.conditions.values_list("field", "value")) == [
        ("finalCalledPartyNumber", ["1000", "1001"])
    ]
    assert dict(webhook.headers.values_list("name", "value")) == {
        "Authorization": "Bearer s3cr3t",
        "X-Tenant": "acme",
    }


def test_patch_changes_only_what_is_given(premium: str, staff_api: APIClient) -> None:
    created = create(staff_api, secret=SECRET).json()
    response = staff_api.patch(
        f"/api/v1/webhooks/{created['id']}/", {"enabled": False}, format="json"
    )
    assert response.status_code == 200
    webhook = Webhook.objects.get()
    assert not webhook.enabled and webhook.secret == SECRET and webhook.name == "Missed calls"
    assert webhook.conditions.count() == 2 and webhook.headers.count() == 1
    staff_api.patch(f"/api/v1/webhooks/{created['id']}/", {"secret": ""}, format="json")
    assert Webhook.objects.get().secret == ""


def test_delete_removes_the_webhook_with_its_rows(premium: str, staff_api: APIClient) -> None:
    created = create(staff_api).json()
    assert staff_api.delete(f"/api/v1/webhooks/{created['id']}/").status_code == 204
    assert (Webhook.objects.count(), Condition.objects.count(), Header.objects.count()) == (0, 0, 0)


# --- validation ------------------------------------------------------------------------------


def test_an_error_points_at_the_exact_condition_and_nothing_is_saved(
    premium: str, staff_api: APIClient
) -> None:
    conditions = [
        {"field": "duration", "operator": "gt", "value": 300},
        {"field": "duration", "operator": "gt", "value": "abc"},
    ]
    response = create(staff_api, conditions=conditions)
    assert response.status_code == 400
    assert response.json() == {"conditions": [{}, {"value": ["'abc' is not a whole number"]}]}
    assert Webhook.objects.count() == 0


def test_an_unknown_field_lists_the_valid_ones(premium: str, staff_api: APIClient) -> None:
    response = create(staff_api, conditions=[{"field": "callerId", "operator": "eq", "value": 1}])
    (message,) = response.json()["conditions"][0]["field"]
    assert "unknown CDR field 'callerId'" in message
    assert "finalCalledPartyNumber" in message and "dateTimeConnect" in message


@pytest.mark.parametrize(
    ("condition", "key", "fragment"),
    [
        (
            {"field": "callingPartyNumber", "operator": "regex", "value": "(unclosed"},
            "value",
            "regular expression",
        ),
        ({"field": "duration", "operator": "lt", "value": "ten"}, "value", "whole number"),
        ({"field": "callingPartyNumber", "operator": "gt", "value": "5"}, "operator", "is text"),
        ({"field": "dateTimeConnect", "operator": "gte", "value": "yesterday"}, "value", "ISO"),
        ({"field": "duration", "operator": "eq"}, "value", "required"),
    ],
)
def test_values_that_cannot_match_are_refused_on_save(
    premium: str, staff_api: APIClient, condition: dict[str, Any], key: str, fragment: str
) -> None:
    response = create(staff_api, conditions=[condition])
    assert response.status_code == 400
    assert fragment in response.json()["conditions"][0][key][0]


def test_shape_errors_point_at_the_item_too(premium: str, staff_api: APIClient) -> None:
    response = create(
        staff_api,
        conditions=[{"field": "duration", "operator": "between"}, "duration > 3"],
        headers=[{"name": "X-A"}],
    )
    assert response.status_code == 400
    errors = response.json()
    assert list(errors["conditions"][0]) == ["operator"]
    assert errors["conditions"][1] == {
        "non_field_errors": ["a condition is an object {field, operator, value}"]
    }
    assert errors["headers"] == [{"value": ["a header value is required"]}]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            [{"name": "X-Ok", "value": "1"}, {"name": "X-A\r\nEvil", "value": "1"}],
            [{}, {"name": ["header names must not contain CR or LF"]}],
        ),
        (
            [{"name": "X-A", "value": "a\r\nInjected: 1"}],
            [{"value": ["header values must not contain CR or LF"]}],
        ),
        (
            [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}],
            [{}, {"name": ["duplicate header 'x-a' (header names ignore case)"]}],
        ),
        (
            [{"name": "webhook-signature", "value": "v1,x"}],
            [{"name": ["webhook-signature is set by the appliance and cannot be set here"]}],
        ),
        (
            [{"name": "content-type", "value": "text/plain"}],
            [{"name": ["Content-Type is set by the appliance and cannot be set here"]}],
        ),
        (
            [{"name": "X Space", "value": "1"}],
            [
                {
                    "name": [
                        "a header name is 1 to 100 letters, digits or !#$%&'*+-.^_`|~ "
                        "(no spaces or colons)"
                    ]
                }
            ],
        ),
        (
            [{"name": "X-Emoji", "value": "☎"}],
            [{"value": ["header values may hold visible ASCII or Latin-1 text, spaces and tabs"]}],
        ),
        (
            [{"name": "X-New", "value": MASK}],
            [{"value": [f"{MASK} keeps a stored value, but 'X-New' has none"]}],
        ),
    ],
)
def test_bad_headers_are_refused_on_save(
    premium: str, staff_api: APIClient, headers: list[dict[str, str]], expected: list[Any]
) -> None:
    response = create(staff_api, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"headers": expected}
    assert Webhook.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://crm.example.com/hook", "http:// or https://"),
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("https://crm.example.com/a b", "spaces"),
        ("https:///nohost", "no host"),
    ],
)
def test_bad_urls_are_refused(premium: str, staff_api: APIClient, url: str, fragment: str) -> None:
    response = create(staff_api, url=url)
    assert response.status_code == 400
    assert fragment in response.json()["url"][0]


def test_loopback_is_accepted_when_allowed(premium: str, local: None, staff_api: APIClient) -> None:
    assert create(staff_api, url="http://127.0.0.1:9/hook").status_code == 201


def test_meta_must_be_an_object_and_names_unique(premium: str, staff_api: APIClient) -> None:
    assert create(staff_api, meta=["x"]).json() == {
        "meta": ['meta is a JSON object, e.g. {} or {"event": "missed call"}']
    }
    create(staff_api)
    assert create(staff_api).json() == {"name": ["a webhook named 'Missed calls' exists already"]}


def test_every_problem_is_reported_at_once(premium: str, staff_api: APIClient) -> None:
    response = create(
        staff_api,
        url="gopher://x",
        secret="nope",
        conditions=[{"field": "nope", "operator": "eq", "value": 1}],
        headers=[{"name": "Host", "value": "x"}],
    )
    assert set(response.json()) == {"url", "secret", "conditions", "headers"}


# --- secrets ---------------------------------------------------------------------------------


def test_secret_and_header_values_never_appear_on_read(
    premium: str, staff_api: APIClient, api: APIClient
) -> None:
    created = create(staff_api, secret=SECRET)
    pk = created.json()["id"]
    texts = [
        created.content.decode(),
        api.get("/api/v1/webhooks/").content.decode(),
        api.get(f"/api/v1/webhooks/{pk}/").content.decode(),
        staff_api.patch(
            f"/api/v1/webhooks/{pk}/", {"enabled": True}, format="json"
        ).content.decode(),
    ]
    for text in texts:
        assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
        assert "s3cr3t" not in text
    assert api.get(f"/api/v1/webhooks/{pk}/").json()["has_secret"] is True


def test_a_generated_secret_is_shown_once(premium: str, staff_api: APIClient) -> None:
    response = create(staff_api, generate_secret=True)
    secret = response.json()["secret"]
    assert secret_problem(secret) is None
    assert Webhook.objects.get().secret == secret
    shown = staff_api.get(f"/api/v1/webhooks/{response.json()['id']}/")
    assert secret not in shown.content.decode() and shown.json()["has_secret"] is True
    rotated = staff_api.patch(
        f"/api/v1/webhooks/{response.json()['id']}/", {"generate_secret": True}, format="json"
    )
    assert rotated.json()["secret"] not in (None, secret)
    assert Webhook.objects.get().secret == rotated.json()["secret"]


def test_a_bad_or_doubled_secret_is_refused(premium: str, staff_api: APIClient) -> None:
    assert create(staff_api, secret="plain").json() == {"secret": ["a secret starts with whsec_"]}
    doubled = create(staff_api, secret=generate_secret(), generate_secret=True)
    assert doubled.json() == {"secret": ["give a secret or ask for a generated one, not both"]}


# --- authentication, permissions, license ----------------------------------------------------

ENDPOINTS = [
    ("get", "/api/v1/webhooks/"),
    ("post", "/api/v1/webhooks/"),
    ("get", "/api/v1/webhooks/1/"),
    ("put", "/api/v1/webhooks/1/"),
    ("patch", "/api/v1/webhooks/1/"),
    ("delete", "/api/v1/webhooks/1/"),
    ("post", "/api/v1/webhooks/1/test/"),
    ("post", "/api/v1/webhooks/1/dry-run/"),
    ("get", "/api/v1/webhooks/1/deliveries/"),
    ("get", "/api/v1/deliveries/"),
    ("get", "/api/v1/deliveries/1/"),
    ("post", "/api/v1/deliveries/1/redeliver/"),
    ("post", "/api/v1/deliveries/redeliver/"),
    ("get", "/api/v1/cdr-fields/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_every_endpoint_needs_credentials(method: str, url: str) -> None:
    response = getattr(APIClient(), method)(url, {}, format="json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("method", "url"), [e for e in ENDPOINTS if e[0] != "get"])
def test_writes_are_for_staff(premium: str, api: APIClient, method: str, url: str) -> None:
    webhook = make_webhook("https://crm.example.com/hook")
    response = getattr(api, method)(url.replace("/1/", f"/{webhook.pk}/"), {}, format="json")
    assert response.status_code == 403
    assert "permission" in response.json()["detail"]
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_a_token_authenticates(premium: str, staff: User) -> None:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    assert create(client).status_code == 201


@pytest.mark.usefixtures("unlicensed")
def test_without_a_license_saving_and_testing_are_403_but_reading_works(
    staff_api: APIClient,
) -> None:
    webhook = make_webhook("https://crm.example.com/hook")
    attempts = [
        create(staff_api),
        staff_api.put(f"/api/v1/webhooks/{webhook.pk}/", body(), format="json"),
        staff_api.patch(f"/api/v1/webhooks/{webhook.pk}/", {"enabled": False}, format="json"),
        staff_api.post(f"/api/v1/webhooks/{webhook.pk}/test/", {}, format="json"),
    ]
    for response in attempts:
        assert response.status_code == 403
        data = response.json()
        assert (data["code"], data["license_state"]) == ("license_required", "community")
        assert "premium license" in data["detail"] and "license_install" in data["detail"]
    assert Webhook.objects.get().enabled is True
    assert staff_api.get("/api/v1/webhooks/").json()["count"] == 1
    assert staff_api.get(f"/api/v1/webhooks/{webhook.pk}/").status_code == 200
    dry_run = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/dry-run/", {}, format="json")
    assert dry_run.status_code == 200
    assert staff_api.delete(f"/api/v1/webhooks/{webhook.pk}/").status_code == 204


def test_enabling_beyond_the_license_limit_is_refused(premium: str, staff_api: APIClient) -> None:
    Webhook.objects.bulk_create(
        Webhook(name=f"hook {n}", url="https://crm.example.com/hook") for n in range(50)
    )
    response = create(staff_api)
    assert response.status_code == 400
    assert response.json()["enabled"] == [
        "the license allows 50 enabled webhooks and 50 are enabled: "
        "disable one first, or save this one disabled"
    ]
    disabled = create(staff_api, enabled=False)
    assert disabled.status_code == 201
    enable = staff_api.patch(
        f"/api/v1/webhooks/{disabled.json()['id']}/", {"enabled": True}, format="json"
    )
    assert enable.status_code == 400
    Webhook.objects.filter(name="hook 0").update(enabled=False)
    assert staff_api.patch(
        f"/api/v1/webhooks/{disabled.json()['id']}/", {"enabled": True}, format="json"
    ).json()["enabled"]


# --- test send -------------------------------------------------------------------------------


def test_test_send_posts_the_reference_payload_and_returns_the_attempt(
    premium: str, local: None, staff_api: APIClient, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("thanks")
    webhook = make_webhook(httpserver.url_for("/hook"), meta={"event": "missed call"})
    Header.objects.create(webhook=webhook, name="Authorization", value="Bearer s3cr3t")
    response = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/test/", {}, format="json")
    assert response.status_code == 200
    ((request, _),) = httpserver.log
    assert json.loads(request.get_data()) == reference_payload()
    assert request.headers["Authorization"] == "Bearer s3cr3t"
    attempt = response.json()
    assert (attempt["status_code"], attempt["error_class"], attempt["response_body"]) == (
        200,
        "",
        "thanks",
    )
    assert attempt["trigger"] == "test" and attempt["latency_ms"] > 0
    assert attempt["request_headers"]["Authorization"] == MASK
    assert "s3cr3t" not in response.content.decode()
    assert Delivery.objects.get().kind == Delivery.Kind.TEST


def test_test_send_of_a_stored_cdr(
    premium: str, local: None, staff_api: APIClient, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok")
    webhook = make_webhook(
        httpserver.url_for("/hook"), meta={"event": "missed call"}, enabled=False
    )
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()]))
    cdr = Cdr.objects.get()
    response = staff_api.post(
        f"/api/v1/webhooks/{webhook.pk}/test/", {"cdr_id": cdr.pk}, format="json"
    )
    assert response.json()["status_code"] == 200
    assert json.loads(httpserver.log[0][0].get_data()) == reference_payload()
    assert Delivery.objects.get().cdr == cdr
    missing = staff_api.post(
        f"/api/v1/webhooks/{webhook.pk}/test/", {"cdr_id": cdr.pk + 1}, format="json"
    )
    assert missing.status_code == 400 and "cdr_id" in missing.json()


def test_test_send_reports_a_failing_receiver(
    premium: str, local: None, staff_api: APIClient, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    webhook = make_webhook(httpserver.url_for("/hook"))
    attempt = staff_api.post(f"/api/v1/webhooks/{webhook.pk}/test/", {}, format="json").json()
    assert (attempt["status_code"], attempt["error_class"]) == (503, "http")
    assert len(httpserver.log) == 1  # one attempt, never retried
    assert Delivery.objects.get().status == Delivery.Status.FAILED


# --- dry run ---------------------------------------------------------------------------------


def dry_run(client: APIClient, webhook: Webhook, **data: Any) -> Any:
    return client.post(f"/api/v1/webhooks/{webhook.pk}/dry-run/", data, format="json")


@pytest.mark.usefixtures("stored_samples")
def test_dry_run_counts_the_saved_conditions_over_stored_samples(
    premium: str, staff_api: APIClient
) -> None:
    missed = make_webhook("https://crm.example.com/hook", [("dateTimeConnect", "eq", "Never")])
    every = make_webhook("https://crm.example.com/hook", name="Every")
    result = dry_run(staff_api, missed).json()
    assert (result["evaluated"], result["matched"]) == (24, 17)
    assert len(result["sample"]) == 10
    sample = result["sample"][0]
    cdr = Cdr.objects.get(pk=sample["id"])
    assert sample["pkid"] == cdr.pkid and cdr.connect_at is None
    assert set(sample) == {
        "id",
        "pkid",
        "cluster",
        "origination_at",
        "calling_party_number",
        "original_called_party_number",
        "final_called_party_number",
    }
    assert dry_run(staff_api, every).json()["matched"] == 24
    assert Delivery.objects.count() == 0


@pytest.mark.usefixtures("stored_samples")
def test_dry_run_of_conditions_from_the_body_in_a_range_or_the_last_n(
    premium: str, staff_api: APIClient
) -> None:
    webhook = make_webhook("https://crm.example.com/hook", [("dateTimeConnect", "eq", "Never")])
    long_calls = [{"field": "duration", "operator": "gt", "value": 60}]
    result = dry_run(staff_api, webhook, conditions=long_calls).json()
    assert (result["evaluated"], result["matched"]) == (24, 2)
    assert {row["id"] for row in result["sample"]} == set(
        Cdr.objects.filter(duration__gt=60).values_list("pk", flat=True)
    )
    in_2020 = dry_run(
        staff_api, webhook, since="2020-01-01T00:00:00Z", until="2021-01-01T00:00:00Z"
    ).json()
    assert in_2020["evaluated"] == 18
    assert (
        in_2020["matched"]
        == Cdr.objects.filter(connect_at__isnull=True, origination_at__year=2020).count()
    )
    newest = dry_run(staff_api, webhook, limit=3, conditions=[]).json()
    assert (newest["evaluated"], newest["matched"]) == (3, 3)
    assert [row["id"] for row in newest["sample"]] == list(
        Cdr.objects.order_by("-id").values_list("pk", flat=True)[:3]
    )


def test_dry_run_refuses_bad_conditions_and_limits(premium: str, staff_api: APIClient) -> None:
    webhook = make_webhook("https://crm.example.com/hook")
    bad = dry_run(
        staff_api,
        webhook,
        conditions=[{"field": "duration", "operator": "gt", "value": 1}, {"field": "x"}],
    )
    assert bad.status_code == 400
    assert bad.json()["conditions"][0] == {} and "field" in bad.json()["conditions"][1]
    assert dry_run(staff_api, webhook, limit=100_001).status_code == 400


# --- deliveries ------------------------------------------------------------------------------


@pytest.fixture
def delivered(premium: str, local: None, httpserver: HTTPServer, tmp_path: Path) -> Webhook:
    """A webhook with three deliveries: one succeeded, one failed (404), one pending."""
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    webhook = make_webhook(httpserver.url_for("/ok"))
    rows = [{**reference_row(), "pkid": f"p{n}"} for n in range(3)]
    ingest(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", rows))
    first, second, _ = Delivery.objects.order_by("id")
    deliveries_attempt(ids=[first.pk])
    Webhook.objects.filter(pk=webhook.pk).update(url=httpserver.url_for("/missing"))
    caches_clear()  # workers see an edit within WEBHOOK_CACHE_SECONDS
    deliveries_attempt(ids=[second.pk])
    Webhook.objects.filter(pk=webhook.pk).update(url=httpserver.url_for("/ok"))
    caches_clear()
    return webhook


def test_deliveries_list_filter_and_retrieve_with_attempts(
    delivered: Webhook, api: APIClient
) -> None:
    listed = api.get("/api/v1/deliveries/").json()
    assert listed["count"] == 3
    assert sorted(d["status"] for d in listed["results"]) == ["failed", "pending", "succeeded"]
    failed = api.get("/api/v1/deliveries/?status=failed").json()["results"]
    assert len(failed) == 1
    (attempt,) = failed[0]["attempts"]
    assert (attempt["status_code"], attempt["error_class"], attempt["response_body"]) == (
        404,
        "http",
        "no",
    )
    assert api.get("/api/v1/deliveries/?status=failed&status=succeeded").json()["count"] == 2
    assert api.get(f"/api/v1/deliveries/?webhook={delivered.pk}&kind=event").json()["count"] == 3
    assert api.get("/api/v1/deliveries/?kind=test").json()["count"] == 0
    tomorrow = (timezone.now() + timezone.timedelta(days=1)).isoformat()
    assert api.get("/api/v1/deliveries/", {"since": tomorrow}).json()["count"] == 0
    assert api.get("/api/v1/deliveries/", {"until": tomorrow}).json()["count"] == 3
    detail = api.get(f"/api/v1/deliveries/{failed[0]['id']}/").json()
    assert json.loads(detail["body"])["name"] == "Caller ID Webhook"
    assert detail["webhook_name"] == "Caller ID Webhook" and detail["attempt_count"] == 1
    of_webhook = api.get(f"/api/v1/webhooks/{delivered.pk}/deliveries/?status=succeeded").json()
    assert (
        of_webhook["count"] == 1 and of_webhook["results"][0]["attempts"][0]["status_code"] == 200
    )


def test_redeliver_one(delivered: Webhook, staff_api: APIClient, httpserver: HTTPServer) -> None:
    failed = Delivery.objects.get(status=Delivery.Status.FAILED)
    response = staff_api.post(f"/api/v1/deliveries/{failed.pk}/redeliver/")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    deliveries_attempt(ids=[failed.pk])
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.SUCCEEDED
    assert list(failed.attempts.values_list("number", "status_code")) == [(1, 404), (2, 200)]


def test_redeliver_in_bulk(delivered: Webhook, staff_api: APIClient) -> None:
    url = "/api/v1/deliveries/redeliver/"
    since = (timezone.now() - timezone.timedelta(hours=1)).isoformat()
    response = staff_api.post(url, {"webhook": delivered.pk, "since": since}, format="json")
    assert response.status_code == 202 and response.json() == {"requeued": 1}
    assert Delivery.objects.filter(status=Delivery.Status.PENDING).count() == 2
    both = staff_api.post(
        url, {"webhook": delivered.pk, "status": ["succeeded", "pending"]}, format="json"
    )
    assert both.json() == {"requeued": 3}
    future = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    later = staff_api.post(
        url, {"webhook": delivered.pk, "since": future, "status": ["pending"]}, format="json"
    )
    assert later.json() == {"requeued": 0}
    bad = staff_api.post(url, {"webhook": delivered.pk, "status": ["sending"]}, format="json")
    assert bad.status_code == 400 and "status" in bad.json()


@pytest.mark.usefixtures("unlicensed")
def test_redelivery_needs_a_license(staff_api: APIClient) -> None:
    webhook = make_webhook("https://crm.example.com/hook")
    response = staff_api.post(
        "/api/v1/deliveries/redeliver/", {"webhook": webhook.pk}, format="json"
    )
    assert response.status_code == 403 and response.json()["code"] == "license_required"


# --- field catalogue -------------------------------------------------------------------------


def test_cdr_fields_lists_the_catalogue_with_operators(api: APIClient) -> None:
    data = api.get("/api/v1/cdr-fields/").json()
    assert data["count"] == 133 and len(data["results"]) == 133 and data["next"] is None
    fields = {row["name"]: row for row in data["results"]}
    assert fields["duration"]["kind"] == "number" and "gt" in fields["duration"]["operators"]
    assert fields["dateTimeConnect"]["kind"] == "time"
    caller = fields["callingPartyNumber"]
    assert caller["kind"] == "text" and caller["type"] == "VARCHAR(50)"
    assert "regex" in caller["operators"] and "gt" not in caller["operators"]
    assert data["results"][0]["name"] == "cdrRecordType"
    assert fields["cdrRecordType"]["generation"] == "A"


def test_the_deliveries_of_a_webhook_with_a_non_integer_id_are_404_not_500(
    staff_api: APIClient,
) -> None:
    # Found by tests/test_schema_fuzz.py: the id went straight into the ORM lookup.
    response = staff_api.get("/api/v1/webhooks/%C3%B4j/deliveries/")
    assert response.status_code == 404
