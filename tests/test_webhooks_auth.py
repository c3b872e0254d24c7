"""Receiver authentication (issue 14, item 3): Basic, Bearer and OAuth2 client credentials.

Real receivers on 127.0.0.1 (pytest-httpserver) and a real OAuth2 token endpoint on it:
the token is fetched through the guarded HTTP module, cached until it expires, renewed
once on a 401; credentials never appear in clear in the API, the admin or the attempt log.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from werkzeug import Request, Response

from calltelemetry.caching import caches_clear
from tests.test_webhooks import make_webhook
from tests.test_webhooks_admin import form
from webhooks.delivery import deliveries_attempt
from webhooks.models import Delivery, Webhook
from webhooks.services import webhook_test_send

MASK = "••••••"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def local(settings: Any, premium: str) -> Any:
    import ipaddress

    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 2.0
    settings.WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0)
    caches_clear()  # no token or webhook snapshot of another test
    yield
    caches_clear()


def api_body(url: str, **overrides: Any) -> dict[str, Any]:
    return {"name": "CRM", "url": url, "conditions": [], "headers": [], **overrides}


class TokenEndpoint:
    """An OAuth2 client-credentials token endpoint (RFC 6749 §4.4) on the test's server."""

    def __init__(self, server: HTTPServer, *, expires_in: int | None = 3600) -> None:
        self.issued: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.refuse = False
        server.expect_request("/token", method="POST").respond_with_handler(self.handle)
        self.url = server.url_for("/token")

    def handle(self, request: Request) -> Response:
        self.forms.append(request.form.to_dict())
        if request.mimetype != "application/x-www-form-urlencoded" or self.refuse:
            return Response(
                json.dumps({"error": "invalid_client"}), 401, mimetype="application/json"
            )
        if request.form.to_dict() != {
            "grant_type": "client_credentials",
            "client_id": "appliance",
            "client_secret": "cl13nt-s3cr3t",
            "scope": "cdr.write",
        }:
            return Response(
                json.dumps({"error": "invalid_request"}), 400, mimetype="application/json"
            )
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return Response(json.dumps(answer), mimetype="application/json")


class Receiver:
    """A receiver that accepts only the tokens in `valid` (all when None)."""

    def __init__(self, server: HTTPServer, valid: set[str] | None = None) -> None:
        self.valid = valid
        self.seen: list[str] = []
        server.expect_request("/hook", method="POST").respond_with_handler(self.handle)
        self.url = server.url_for("/hook")

    def handle(self, request: Request) -> Response:
        given = request.headers.get("Authorization", "")
        self.seen.append(given)
        if self.valid is not None and given.removeprefix("Bearer ") not in self.valid:
            return Response("expired token", 401)
        return Response("ok")


OAUTH2 = {
    "type": "oauth2",
    "client_id": "appliance",
    "client_secret": "cl13nt-s3cr3t",
    "scope": "cdr.write",
}


def oauth2_webhook(receiver: Receiver, endpoint: TokenEndpoint) -> Webhook:
    return make_webhook(
        receiver.url,
        auth_type="oauth2",
        auth_token_url=endpoint.url,
        auth_client_id="appliance",
        auth_client_secret="cl13nt-s3cr3t",
        auth_scope="cdr.write",
    )


# --- Basic and Bearer -------------------------------------------------------------------------


def test_basic_auth_sends_the_rfc_7617_header_and_logs_only_its_scheme(
    httpserver: HTTPServer,
) -> None:
    receiver = Receiver(httpserver)
    webhook = make_webhook(
        receiver.url, auth_type="basic", auth_username="crm-bot", auth_password="pä55:word"
    )
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    expected = base64.b64encode("crm-bot:pä55:word".encode()).decode()
    assert receiver.seen == [f"Basic {expected}"]
    assert attempt.request_headers["Authorization"] == f"Basic {MASK}"
    logged = json.dumps(Delivery.objects.get().attempts.get().request_headers)
    assert "pä55" not in logged and expected not in logged


def test_bearer_auth_sends_the_token(httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, valid={"s3cr3t-t0ken"})
    webhook = make_webhook(receiver.url, auth_type="bearer", auth_token="s3cr3t-t0ken")
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    assert receiver.seen == ["Bearer s3cr3t-t0ken"]
    assert attempt.request_headers["Authorization"] == f"Bearer {MASK}"


def test_a_webhook_without_auth_sends_no_authorization(httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    attempt = webhook_test_send(webhook=make_webhook(receiver.url))
    assert attempt is not None and receiver.seen == [""]
    assert "Authorization" not in attempt.request_headers


# --- OAuth2 client credentials ------------------------------------------------------------------


def test_oauth2_fetches_a_token_once_and_reuses_it_until_expiry(httpserver: HTTPServer) -> None:
    endpoint, receiver = TokenEndpoint(httpserver), Receiver(httpserver)
    webhook = oauth2_webhook(receiver, endpoint)
    for _ in range(3):
        attempt = webhook_test_send(webhook=webhook)
        assert attempt is not None and attempt.status_code == 200
    assert endpoint.issued == ["tok-1"]
    assert receiver.seen == ["Bearer tok-1"] * 3
    assert attempt.request_headers["Authorization"] == f"Bearer {MASK}"


def test_an_expired_token_is_fetched_again(httpserver: HTTPServer) -> None:
    # 31 s of lifetime, 30 s of margin: the token is used for about one second.
    endpoint, receiver = TokenEndpoint(httpserver, expires_in=31), Receiver(httpserver)
    webhook = oauth2_webhook(receiver, endpoint)
    webhook_test_send(webhook=webhook)
    webhook_test_send(webhook=webhook)
    time.sleep(1.2)
    webhook_test_send(webhook=webhook)
    assert endpoint.issued == ["tok-1", "tok-2"]
    assert receiver.seen == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


def test_a_401_renews_the_token_once_and_sends_again(httpserver: HTTPServer) -> None:
    endpoint = TokenEndpoint(httpserver)
    receiver = Receiver(httpserver, valid=set())
    webhook = oauth2_webhook(receiver, endpoint)
    receiver.valid = {"tok-2"}  # the receiver revoked the first token
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    assert endpoint.issued == ["tok-1", "tok-2"]
    assert receiver.seen == ["Bearer tok-1", "Bearer tok-2"]


def test_a_receiver_that_refuses_every_token_gets_one_renewal_not_more(
    httpserver: HTTPServer,
) -> None:
    endpoint, receiver = TokenEndpoint(httpserver), Receiver(httpserver, valid=set())
    attempt = webhook_test_send(webhook=oauth2_webhook(receiver, endpoint))
    assert attempt is not None and attempt.status_code == 401 and attempt.error_class == "http"
    assert endpoint.issued == ["tok-1", "tok-2"] and len(receiver.seen) == 2


def test_a_token_endpoint_error_is_an_auth_error_in_plain_words_and_retried(
    httpserver: HTTPServer,
) -> None:
    endpoint, receiver = TokenEndpoint(httpserver), Receiver(httpserver)
    endpoint.refuse = True
    webhook = oauth2_webhook(receiver, endpoint)
    delivery = Delivery.objects.create(
        webhook=webhook, event_id="msg_auth", body="{}", next_attempt_at=timezone.now()
    )
    attempt = deliveries_attempt(ids=[delivery.pk])[delivery.pk]
    assert attempt is not None and attempt.error_class == "auth"
    assert attempt.error == (
        f"OAuth2 token endpoint {endpoint.url} answered HTTP 401 (invalid_client)"
    )
    assert receiver.seen == []  # nothing is sent without credentials
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RETRYING and delivery.next_attempt_at is not None
    assert "cl13nt" not in delivery.last_error


def test_the_token_endpoint_is_under_the_destination_policy(
    httpserver: HTTPServer, settings: Any
) -> None:
    receiver = Receiver(httpserver)
    webhook = make_webhook(
        receiver.url,
        auth_type="oauth2",
        auth_token_url="http://169.254.169.254/token",
        auth_client_id="appliance",
        auth_client_secret="cl13nt-s3cr3t",
    )
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.error_class == "auth"
    assert "cloud metadata address" in attempt.error and receiver.seen == []


# --- API and admin: write-only, masked ------------------------------------------------------------


def test_the_api_shows_secret_members_masked_and_keeps_them_when_sent_back(
    httpserver: HTTPServer, staff_api: APIClient
) -> None:
    endpoint, receiver = TokenEndpoint(httpserver), Receiver(httpserver)
    created = staff_api.post(
        "/api/v1/webhooks/",
        api_body(receiver.url, auth={**OAUTH2, "token_url": endpoint.url}),
        format="json",
    )
    assert created.status_code == 201, created.json()
    shown = created.json()["auth"]
    assert shown == {
        "type": "oauth2",
        "username": "",
        "password": None,
        "token": None,
        "token_url": endpoint.url,
        "client_id": "appliance",
        "client_secret": MASK,
        "scope": "cdr.write",
    }
    url = f"/api/v1/webhooks/{created.json()['id']}/"
    # Everything read, sent back: the stored client secret is kept.
    back = staff_api.put(url, api_body(receiver.url, auth=shown), format="json")
    assert back.status_code == 200, back.json()
    webhook = Webhook.objects.get()
    assert webhook.auth_client_secret == "cl13nt-s3cr3t"
    assert "cl13nt" not in json.dumps(staff_api.get(url).json())
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None and attempt.status_code == 200
    # Omitted: kept too. Another type: its members replace the old ones.
    assert staff_api.patch(url, {"name": "CRM 2"}, format="json").status_code == 200
    assert Webhook.objects.get().auth_type == "oauth2"
    changed = staff_api.patch(url, {"auth": {"type": "bearer", "token": "t0k"}}, format="json")
    assert changed.json()["auth"]["token"] == MASK
    webhook = Webhook.objects.get()
    assert (webhook.auth_type, webhook.auth_token, webhook.auth_client_secret) == (
        "bearer",
        "t0k",
        "",
    )


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        ({"type": "basic", "username": "u"}, "basic auth needs password"),
        ({"type": "basic", "username": "a:b", "password": "p"}, "cannot contain a colon"),
        ({"type": "bearer", "token": MASK}, "there is none"),
        ({"type": "bearer", "token": "two words"}, "without spaces"),
        ({"type": "oauth2", "client_id": "a", "client_secret": "b"}, "oauth2 auth needs token_url"),
        (
            {"type": "oauth2", "token_url": "ftp://x/", "client_id": "a", "client_secret": "b"},
            "token_url: the URL must start with http:// or https://",
        ),
        ({"type": "digest"}, "auth type is one of none, basic, bearer, oauth2"),
        ({"type": "bearer", "token": "t", "password": "p"}, "password is not used by bearer"),
        ({"type": "basic", "username": "u", "password": "line\nbreak"}, "control characters"),
    ],
)
def test_bad_auth_is_refused_with_the_reason(
    staff_api: APIClient, auth: dict[str, Any], fragment: str
) -> None:
    response = staff_api.post(
        "/api/v1/webhooks/", api_body("https://crm.example.com/h", auth=auth), format="json"
    )
    assert response.status_code == 400
    assert any(fragment in problem for problem in response.json()["auth"]), response.json()


def test_auth_and_a_custom_authorization_header_do_not_mix(staff_api: APIClient) -> None:
    response = staff_api.post(
        "/api/v1/webhooks/",
        api_body(
            "https://crm.example.com/h",
            auth={"type": "bearer", "token": "t"},
            headers=[{"name": "authorization", "value": "Bearer other"}],
        ),
        format="json",
    )
    assert response.status_code == 400
    assert "custom Authorization header" in response.json()["auth"][0]


def test_the_admin_sets_auth_and_never_shows_a_secret(admin_client: Client) -> None:
    data = form(
        **{"headers-TOTAL_FORMS": "0", "conditions-TOTAL_FORMS": "0"},
        auth_type="basic",
        auth_username="crm-bot",
        auth_password="adm1n-pa55",
    )
    response = admin_client.post(reverse("admin:webhooks_webhook_add"), data, follow=True)
    assert response.status_code == 200 and not response.context.get("errors")
    webhook = Webhook.objects.get()
    assert (webhook.auth_type, webhook.auth_username, webhook.auth_password) == (
        "basic",
        "crm-bot",
        "adm1n-pa55",
    )
    change = reverse("admin:webhooks_webhook_change", args=[webhook.pk])
    page = admin_client.get(change).content.decode()
    assert "crm-bot" in page and "adm1n-pa55" not in page
    # Saved again with the password left empty: kept.
    assert admin_client.post(change, {**data, "auth_password": ""}).status_code == 302
    assert Webhook.objects.get().auth_password == "adm1n-pa55"


def test_no_credential_reaches_a_log_line(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint, receiver = TokenEndpoint(httpserver), Receiver(httpserver, valid={"tok-2"})
    webhook_test_send(webhook=oauth2_webhook(receiver, endpoint))  # a 401, a renewal
    endpoint.refuse = True
    caches_clear()
    webhook_test_send(webhook=Webhook.objects.get())  # a token endpoint error
    basic = make_webhook(receiver.url, name="basic", auth_type="basic", auth_username="u")
    Webhook.objects.filter(pk=basic.pk).update(auth_password="ba51c-pa55")
    webhook_test_send(webhook=Webhook.objects.get(pk=basic.pk))
    text = caplog.text
    assert "auth failed" in text and "401" in text  # the attempts were logged
    for secret in ("cl13nt-s3cr3t", "tok-1", "tok-2", "ba51c-pa55", "dTpiYTUx"):
        assert secret not in text
