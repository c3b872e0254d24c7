"""The one way out: every webhook delivery and test send goes through `post`.

It owns the timeout, the user agent, "no redirects", no proxies from the environment, and the
destination policy. The policy is checked when connecting, on the addresses DNS returned, and
the socket connects to the very address that was checked, so a name that resolves to a safe
address at save time and to 169.254.169.254 later (DNS rebinding) is still refused. TLS keeps
the host name for SNI and certificate checks. Connections are pooled per worker process.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError

import calltelemetry

USER_AGENT = f"CallTelemetry-Webhooks/{calltelemetry.__version__}"
RESPONSE_EXCERPT = 4096
# Cloud metadata services are never a webhook destination, whatever the allowlist says.
ALWAYS_REFUSED = (
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(Exception):
    """The destination policy forbids this address. Permanent: never retried."""


def address_problem(address: IPAddress) -> str | None:
    """Why the policy refuses `address`, or None when it may be reached."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in net for net in ALWAYS_REFUSED):
        return f"{address} is a cloud metadata address"
    if any(
        address.version == net.version and address in net
        for net in settings.WEBHOOK_ALLOWED_NETWORKS
    ):
        return None
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is a {label} address (allow it with WEBHOOK_ALLOWED_NETWORKS)"
    return None


def url_problem(url: str) -> str | None:
    """What is wrong with a destination URL before any DNS: scheme, host, literal address."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL has no host"
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    return address_problem(literal)


def _guarded_socket(conn: HTTPConnection) -> socket.socket:
    host, port = conn._dns_host, conn.port  # type: ignore[attr-defined]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise DestinationRefused(f"{conn.host} resolves to {problem}")
    original_new_conn = HTTPConnection._new_conn
    # Connect to the address we checked, not to the name (which could resolve anew).
    conn._dns_host = str(addresses[0])  # type: ignore[attr-defined]
    try:
        return original_new_conn(conn)
    finally:
        conn._dns_host = host  # type: ignore[attr-defined]


class GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)


class GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)


class GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPPool,
            "https": GuardedHTTPSPool,
        }


_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # an environment proxy would bypass the address policy
        adapter = GuardedAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


@dataclass
class Response:
    """The outcome of one request, whatever happened."""

    status_code: int | None = None
    body: str = ""
    latency_ms: float = 0.0
    error_class: str = ""
    error: str = ""
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _classify(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, NameResolutionError | socket.gaierror):
            return "dns"
        cause = cause.__cause__ or cause.__context__
    return "connect"


def post(
    url: str, *, body: bytes, headers: dict[str, str], timeout: float | None = None
) -> Response:
    """POST `body` to `url`. Never raises for network trouble: the Response says what happened."""
    timeout = timeout or settings.WEBHOOK_TIMEOUT
    problem = url_problem(url)
    if problem:
        return Response(error_class="policy", error=problem)
    started = time.perf_counter()
    try:
        with _session().post(
            url,
            data=body,
            headers={**headers, "User-Agent": USER_AGENT},
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        ) as reply:
            excerpt = reply.raw.read(RESPONSE_EXCERPT, decode_content=True) or b""
            # Drain a small remainder so the connection can be reused; drop a large one.
            if len(reply.raw.read(65536) or b"") >= 65536:
                reply.close()
            latency = (time.perf_counter() - started) * 1000
            return Response(
                status_code=reply.status_code,
                body=excerpt.decode("utf-8", errors="replace"),
                latency_ms=latency,
                error_class="" if 200 <= reply.status_code < 300 else "http",
                error="" if reply.ok else f"HTTP {reply.status_code} {reply.reason or ''}".strip(),
                retry_after=_retry_after(reply.headers.get("Retry-After")),
                headers=dict(reply.headers),
            )
    except DestinationRefused as exc:
        return Response(error_class="policy", error=str(exc), latency_ms=_ms(started))
    except requests.RequestException as exc:
        return Response(error_class=_classify(exc), error=str(exc)[:1000], latency_ms=_ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def is_permanent(response: Response) -> bool:
    """Failures that retrying cannot fix: policy refusals, redirects (never followed) and 4xx
    other than 408, 425 and 429. Connection errors, timeouts and 5xx are worth retrying."""
    if response.error_class == "policy":
        return True
    code = response.status_code
    return code is not None and 300 <= code < 500 and code not in (408, 425, 429)
