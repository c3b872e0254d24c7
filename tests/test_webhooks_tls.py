"""TLS per webhook (issue 14, item 6): a CA bundle for on-prem receivers, client certificates
(mTLS), verification always on, and failures in plain words.

A real HTTPS server on 127.0.0.1 whose certificates trustme makes; the webhook reaches it as
https://localhost:PORT/, so host names are checked as they would be in production.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from rest_framework.test import APIClient

from calltelemetry.caching import caches_clear
from tests.test_webhooks import make_webhook
from webhooks import http
from webhooks.models import Webhook
from webhooks.services import webhook_test_send

pytestmark = pytest.mark.django_db

MASK = "••••••"


@pytest.fixture(autouse=True)
def local(settings: Any, premium: str) -> Iterator[None]:
    # localhost may resolve to ::1 as well as 127.0.0.1: both are allowed here.
    settings.WEBHOOK_ALLOWED_NETWORKS = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    settings.WEBHOOK_TIMEOUT = 3.0
    caches_clear()
    yield
    caches_clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = dict(item for rdn in (peer or {}).get("subject", ()) for item in rdn)
        self.server.clients.append(subject.get("commonName", ""))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def https_server(leaf: trustme.LeafCert, client_ca: trustme.CA | None = None) -> Iterator[Any]:
    """An HTTPS receiver presenting `leaf`; with `client_ca`, it requires a client
    certificate that CA issued."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.clients = []  # type: ignore[attr-defined]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        server.url = f"https://localhost:{server.server_address[1]}/hook"  # type: ignore[attr-defined]
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def pem(blob: trustme.Blob) -> str:
    return blob.bytes().decode()


def send(webhook: Webhook) -> Any:
    attempt = webhook_test_send(webhook=webhook)
    assert attempt is not None
    return attempt


def test_a_receiver_behind_its_own_ca_is_reached_with_the_ca_bundle(ca: trustme.CA) -> None:
    with https_server(ca.issue_cert("localhost")) as server:
        attempt = send(make_webhook(server.url, ca_bundle=pem(ca.cert_pem)))
    assert (attempt.status_code, attempt.error_class) == (200, "")


def test_an_unknown_ca_is_refused_in_plain_words(ca: trustme.CA) -> None:
    with https_server(ca.issue_cert("localhost")) as server:
        attempt = send(make_webhook(server.url))
    assert attempt.status_code is None and attempt.error_class == "tls"
    assert attempt.error == (
        "TLS: the certificate of localhost is not signed by a trusted CA (unknown CA: add the "
        "CA that issued it to the webhook's CA bundle)"
    )


def test_another_ca_in_the_bundle_does_not_help(ca: trustme.CA) -> None:
    with https_server(ca.issue_cert("localhost")) as server:
        attempt = send(make_webhook(server.url, ca_bundle=pem(trustme.CA().cert_pem)))
    assert attempt.error_class == "tls" and "unknown CA" in attempt.error


def test_a_wrong_host_name_is_refused_in_plain_words(ca: trustme.CA) -> None:
    with https_server(ca.issue_cert("crm.example.com")) as server:
        attempt = send(make_webhook(server.url, ca_bundle=pem(ca.cert_pem)))
    assert attempt.error_class == "tls"
    assert attempt.error == (
        "TLS: the certificate localhost presented is for another host name, not localhost "
        "(wrong host name)"
    )


def test_an_expired_certificate_is_refused_in_plain_words(ca: trustme.CA) -> None:
    now = datetime.now(UTC)
    leaf = ca.issue_cert(
        "localhost", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    with https_server(leaf) as server:
        attempt = send(make_webhook(server.url, ca_bundle=pem(ca.cert_pem)))
    assert attempt.error_class == "tls"
    assert attempt.error == "TLS: the certificate of localhost has expired"


def test_mutual_tls_presents_the_client_certificate(ca: trustme.CA) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("appliance.example.com", common_name="call-telemetry")
    with https_server(ca.issue_cert("localhost"), client_ca=client_ca) as server:
        webhook = make_webhook(
            server.url,
            ca_bundle=pem(ca.cert_pem),
            client_cert=pem(client.cert_chain_pems[0]),
            client_key=pem(client.private_key_pem),
        )
        attempt = send(webhook)
        assert (attempt.status_code, server.clients) == (200, ["call-telemetry"])
        # Without the certificate, the receiver refuses the connection.
        Webhook.objects.filter(pk=webhook.pk).update(client_cert="", client_key="")
        caches_clear()
        refused = send(Webhook.objects.get(pk=webhook.pk))
    assert refused.error_class == "tls"
    # Either the receiver's alert arrives, or (TLS 1.3) only its closing the connection.
    assert refused.error in (
        "TLS: localhost refused the connection because of our client certificate (missing or "
        "not trusted there: TLSV13_ALERT_CERTIFICATE_REQUIRED)",
        "TLS: localhost closed the connection during the handshake (a receiver that requires "
        "a client certificate does so when it gets none, or one it does not trust)",
    ), refused.error


def test_kept_alive_connections_are_not_shared_across_tls_settings(ca: trustme.CA) -> None:
    """A connection opened under one webhook's CA bundle is never reused for another
    webhook to the same receiver that does not trust that CA."""
    with https_server(ca.issue_cert("localhost")) as server:
        trusted = make_webhook(server.url, ca_bundle=pem(ca.cert_pem), name="trusted")
        untrusted = make_webhook(server.url, name="untrusted")
        assert send(trusted).status_code == 200
        assert send(untrusted).error_class == "tls"
        assert send(trusted).status_code == 200
    assert len(server.clients) == 2


def test_tls_settings_are_checked_when_saved_and_the_key_is_write_only(
    ca: trustme.CA, staff_api: APIClient
) -> None:
    client = ca.issue_cert("appliance.example.com")
    other = ca.issue_cert("other.example.com")
    base = {"name": "On-prem CRM", "url": "https://crm.corp.example/h", "conditions": []}
    bad = staff_api.post(
        "/api/v1/webhooks/",
        {
            **base,
            "ca_bundle": "not a certificate",
            "client_cert": pem(client.cert_chain_pems[0]),
            "client_key": pem(other.private_key_pem),
        },
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["ca_bundle"] == [
        "ca_bundle is one or more PEM certificates (BEGIN CERTIFICATE)"
    ]
    assert bad.json()["client_key"] == ["client_key is not the private key of client_cert"]
    only_cert = staff_api.post(
        "/api/v1/webhooks/", {**base, "client_cert": pem(client.cert_chain_pems[0])}, format="json"
    )
    assert only_cert.json()["client_key"] == [
        "a client certificate and its private key go together: give both or neither"
    ]
    good = staff_api.post(
        "/api/v1/webhooks/",
        {
            **base,
            "ca_bundle": pem(ca.cert_pem),
            "client_cert": pem(client.cert_chain_pems[0]),
            "client_key": pem(client.private_key_pem),
        },
        format="json",
    )
    assert good.status_code == 201, good.json()
    shown = good.json()
    assert shown["client_key"] == MASK and shown["ca_bundle"] == pem(ca.cert_pem)
    assert "PRIVATE KEY" not in str(shown)
    # Read, sent back as read: the key is kept.
    url = f"/api/v1/webhooks/{shown['id']}/"
    back = {k: shown[k] for k in ("name", "ca_bundle", "client_cert", "client_key")}
    assert staff_api.put(url, {**base, **back}, format="json").status_code == 200
    assert Webhook.objects.get().client_key == pem(client.private_key_pem)
    removed = staff_api.patch(url, {"client_cert": "", "client_key": ""}, format="json")
    assert removed.json()["client_key"] is None


def test_a_ca_bundle_also_serves_the_oauth2_token_endpoint(ca: trustme.CA) -> None:
    """The token endpoint is reached with the webhook's TLS settings too (an on-prem IdP)."""
    with https_server(ca.issue_cert("localhost")) as server:
        webhook = make_webhook(
            server.url,
            ca_bundle=pem(ca.cert_pem),
            auth_type="oauth2",
            auth_token_url=server.url,
            auth_client_id="a",
            auth_client_secret="b",
        )
        attempt = send(webhook)
    # The test server answers "ok", not a token: the TLS handshake itself succeeded.
    assert attempt.error_class == "auth"
    assert attempt.error.endswith("answered without an access_token")


def test_the_http_module_verifies_even_without_settings() -> None:
    assert http.Tls().fingerprint == ""
    context = http.tls_context(http.Tls())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
