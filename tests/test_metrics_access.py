"""Who may scrape /metrics: a bearer token, an allowed network, or a staff session."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from calltelemetry import config
from tests.test_settings import run_check
from tests.test_webhooks import make_webhook

OUTSIDE = "203.0.113.7"
TOKEN = "s3cret-metrics-token-0123456789"


@pytest.fixture
def named(db: None) -> str:
    make_webhook("http://127.0.0.1:9/hook", name="Escalations to the CEO")
    return "Escalations to the CEO"


def test_an_outside_address_without_credentials_gets_401_and_no_names(
    named: str, client: Client
) -> None:
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert named not in response.content.decode()


def test_loopback_needs_no_token(named: str, client: Client) -> None:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert named in response.content.decode()
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_the_bearer_token_opens_it_from_anywhere(named: str, client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    response = client.get(
        "/metrics", REMOTE_ADDR=OUTSIDE, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200 and named in response.content.decode()


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}x", "Bearer ", f"bearer {TOKEN[:-1]}"])
def test_a_wrong_token_is_refused_even_from_loopback(
    authorization: str, named: str, client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = TOKEN
    headers = {"Authorization": authorization}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers=headers).status_code == 401
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE, headers=headers).status_code == 401


def test_other_authorization_schemes_are_no_token(
    named: str, client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = TOKEN
    headers = {"Authorization": f"Basic {TOKEN}"}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers=headers).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE, headers=headers).status_code == 401


def test_no_token_is_configured_so_none_is_accepted(named: str, client: Client) -> None:
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_a_request_forwarded_by_a_local_proxy_is_not_local(named: str, client: Client) -> None:
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers={header: OUTSIDE})
        assert response.status_code == 401, header


def test_allowed_networks_replace_loopback(named: str, client: Client, settings: Any) -> None:
    settings.METRICS_ALLOWED_NETWORKS = config.networks("10.0.0.0/8, 2001:db8::/32")
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


def test_staff_sessions_may_read_it_and_other_users_may_not(
    named: str, client: Client, staff: Any, user: Any
) -> None:
    client.force_login(user)
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403
    client.force_login(staff)
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 200 and named in response.content.decode()


@pytest.mark.parametrize(
    ("name", "value"),
    [("METRICS_TOKEN", "short"), ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/40")],
)
def test_a_bad_metrics_setting_stops_start_up_naming_it(name: str, value: str) -> None:
    result = run_check({name: value})
    assert result.returncode != 0
    assert name in result.stderr
