"""Secrets at rest and signing secret rotation (issue 14, items 3 and 7).

Signing secrets, header values, credentials and client keys are Fernet-encrypted with a key
derived from SECRET_KEY: a raw SELECT or a pg_dump shows none of them; a key rotation
through SECRET_KEY_FALLBACKS and `reencrypt_secrets` loses none. A replaced signing secret
keeps signing for WEBHOOK_SECRET_OVERLAP, so receivers that know either secret verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import subprocess
import time
from typing import Any

import pytest
import trustme
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from werkzeug import Request

from calltelemetry.caching import caches_clear
from tests.conftest import test_database_url as database_url
from webhooks.encryption import SecretUnreadable
from webhooks.models import Header, Webhook
from webhooks.services import webhook_test_send

MASK = "••••••"
CLEAR = ("whsec_", "hdr-v4lue-s3cr3t", "ba51c-pa55", "BEGIN EC PRIVATE KEY", "PRIVATE KEY")


@pytest.fixture(autouse=True)
def local(settings: Any) -> Any:
    settings.WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.WEBHOOK_TIMEOUT = 2.0
    caches_clear()
    yield
    caches_clear()


def verifies(secret: str, request: Request) -> bool:
    """A Standard Webhooks receiver that knows only `secret`: any one signature will do."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.get_data()
    )
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, given)
        for given in request.headers["webhook-signature"].split(" ")
    )


def create(staff_api: APIClient, url: str, **fields: Any) -> dict[str, Any]:
    response = staff_api.post(
        "/api/v1/webhooks/",
        {"name": "CRM", "url": url, "conditions": [], **fields},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


# --- rotation -------------------------------------------------------------------------------


def test_during_the_overlap_either_secret_verifies_and_after_it_only_the_new(
    premium: str, staff_api: APIClient, httpserver: HTTPServer, settings: Any, admin_client: Any
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    settings.WEBHOOK_SECRET_OVERLAP = 4
    created = create(staff_api, httpserver.url_for("/hook"), generate_secret=True)
    old = created["secret"]
    url = f"/api/v1/webhooks/{created['id']}/"
    new = staff_api.patch(url, {"generate_secret": True}, format="json").json()["secret"]
    assert new != old
    caches_clear()
    attempt = webhook_test_send(webhook=Webhook.objects.get())
    request = httpserver.log[-1][0]
    assert verifies(old, request) and verifies(new, request)
    assert attempt is not None
    assert attempt.request_headers["webhook-signature"] == f"v1,{MASK} v1,{MASK}"
    page = admin_client.get(f"/admin/webhooks/webhook/{created['id']}/change/").content.decode()
    assert "the replaced secret signs too until" in page and old not in page and new not in page

    until = Webhook.objects.get().previous_secret_until
    assert until is not None
    time.sleep(max(0.0, (until - timezone.now()).total_seconds()) + 0.1)
    caches_clear()
    webhook_test_send(webhook=Webhook.objects.get())
    request = httpserver.log[-1][0]
    assert verifies(new, request) and not verifies(old, request)
    assert len(request.headers["webhook-signature"].split(" ")) == 1


def test_removing_the_secret_stops_signing_at_once(
    premium: str, staff_api: APIClient, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    created = create(staff_api, httpserver.url_for("/hook"), generate_secret=True)
    url = f"/api/v1/webhooks/{created['id']}/"
    staff_api.patch(url, {"generate_secret": True}, format="json")
    staff_api.patch(url, {"secret": ""}, format="json")
    webhook = Webhook.objects.get()
    assert (webhook.secret, webhook.previous_secret, webhook.previous_secret_until) == (
        "",
        "",
        None,
    )
    webhook_test_send(webhook=webhook)
    assert "webhook-signature" not in httpserver.log[-1][0].headers


def test_saving_the_same_secret_again_is_no_rotation(premium: str, staff_api: APIClient) -> None:
    from webhooks.delivery import generate_secret

    secret = generate_secret()
    created = create(staff_api, "https://crm.example.com/h", secret=secret)
    staff_api.patch(f"/api/v1/webhooks/{created['id']}/", {"secret": secret}, format="json")
    assert Webhook.objects.get().previous_secret == ""


# --- encryption at rest -----------------------------------------------------------------------


def stored_in_clear(staff_api: APIClient) -> dict[str, Any]:
    """A webhook with one of every secret, saved through the API."""
    leaf = trustme.CA().issue_cert("appliance.example.com")
    return create(
        staff_api,
        "https://crm.example.com/h",
        generate_secret=True,
        headers=[{"name": "X-Api-Key", "value": "hdr-v4lue-s3cr3t"}],
        auth={"type": "basic", "username": "bot", "password": "ba51c-pa55"},
        client_cert=leaf.cert_chain_pems[0].bytes().decode(),
        client_key=leaf.private_key_pem.bytes().decode(),
    )


def raw_rows() -> str:
    """Every column of the two tables as the database holds them."""
    text = []
    with connection.cursor() as cursor:
        for model in (Webhook, Header):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")
            text.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(text)


def test_a_raw_select_shows_no_secret_in_clear(premium: str, staff_api: APIClient) -> None:
    created = stored_in_clear(staff_api)
    dump = raw_rows()
    assert "crm.example.com" in dump  # the rows are there
    for clear in (*CLEAR, created["secret"], created["secret"].removeprefix("whsec_")):
        assert clear not in dump
    webhook = Webhook.objects.get()
    assert webhook.secret == created["secret"] and webhook.auth_password == "ba51c-pa55"
    assert webhook.headers.get().value == "hdr-v4lue-s3cr3t"
    assert "BEGIN" in webhook.client_key


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_pg_dump_shows_no_secret_in_clear(
    transactional_db: None, premium: str, staff_api: APIClient
) -> None:
    created = stored_in_clear(staff_api)
    url = database_url()
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--table=webhooks_*", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "crm.example.com" in dump
    for clear in (*CLEAR, created["secret"].removeprefix("whsec_")):
        assert clear not in dump


def test_a_key_rotation_keeps_every_secret(
    premium: str, staff_api: APIClient, settings: Any
) -> None:
    created = stored_in_clear(staff_api)
    before = raw_rows()
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    # Without the old key: unreadable, and said so.
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(SecretUnreadable, match="SECRET_KEY_FALLBACKS"):
        Webhook.objects.get()
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("reencrypt_secrets")
    # With it as a fallback: readable, then rewritten with the new key.
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert Webhook.objects.get().secret == created["secret"]
    call_command("reencrypt_secrets")
    assert raw_rows() != before
    settings.SECRET_KEY_FALLBACKS = []
    webhook = Webhook.objects.get()
    assert (webhook.secret, webhook.auth_password) == (created["secret"], "ba51c-pa55")
    assert webhook.headers.get().value == "hdr-v4lue-s3cr3t"


def test_the_migration_encrypts_what_was_stored_in_clear(transactional_db: None) -> None:
    before, after = ("webhooks", "0006_h_tmpl_templates"), ("webhooks", "0007_h_auth_secrets_tls")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state(before).apps
    webhook = old.get_model("webhooks", "Webhook").objects.create(
        name="Old",
        url="https://crm.example.com/h",
        secret="whsec_b2xkIHNlY3JldCBvbGQgc2VjcmV0IG9sZA==",
    )
    old.get_model("webhooks", "Header").objects.create(
        webhook_id=webhook.pk, name="X-Api-Key", value="hdr-v4lue-s3cr3t"
    )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([after])
    assert "whsec_" not in raw_rows() and "hdr-v4lue" not in raw_rows()
    # Read through the models as of that migration: later ones add columns.
    new = executor.loader.project_state(after).apps
    migrated = new.get_model("webhooks", "Webhook").objects.get()
    assert migrated.secret == "whsec_b2xkIHNlY3JldCBvbGQgc2VjcmV0IG9sZA=="
    header = new.get_model("webhooks", "Header").objects.get(webhook_id=migrated.pk)
    assert header.value == "hdr-v4lue-s3cr3t"
    # And back: the previous schema gets the values in clear again.
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    assert "hdr-v4lue-s3cr3t" in raw_rows()
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
