"""The one way out: every webhook delivery and test send goes through `post`.

It owns the timeout, the user agent, "no redirects", no proxies (urllib3 reads no proxy from
the environment), and the destination policy. The policy is checked when connecting, on the
addresses DNS returned, and the socket connects to the very address that was checked, so a
name that resolves to a safe address at save time and to 169.254.169.254 later (DNS
rebinding) is still refused. TLS keeps the host name for SNI and certificate checks.

Connections are kept alive and reused: one thread-safe pool per (scheme, host, port, policy,
TLS settings) in each worker process, so consecutive deliveries to one receiver share a TCP
(and TLS) connection. Every new connection resolves, checks and pins its address again; a reused one
stays connected to the address that was checked when it was opened, and a change of
`WEBHOOK_ALLOWED_NETWORKS` starts new pools.

`WEBHOOK_TIMEOUT` bounds a whole attempt (connect, send, status line, headers and the part
of the body we read), not each socket read: a receiver that answers one byte at a time
would otherwise hold a request, and its worker, for as long as it likes. Socket timeouts
cannot express that, so one watchdog thread per process shuts down the socket of every
request still running at its deadline; the blocked read then returns and the attempt is
recorded as a `timeout`.

TLS: certificates are always verified, against the system's CAs plus a webhook's own CA
bundle (an on-prem receiver behind its own CA), and a webhook may present a client
certificate (mTLS). A failed handshake is a `tls` error saying which check failed, in words.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
import os
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.ssl_match_hostname import CertificateError
from urllib3.util.timeout import Timeout

import calltelemetry
from calltelemetry.caching import BoundedCache

USER_AGENT = f"CallTelemetry-Webhooks/{calltelemetry.__version__}"
RESPONSE_EXCERPT = 4096
DRAIN_LIMIT = 65536
# Keep-alive connections kept per destination and process: as many as sends run at once.
POOL_MAXSIZE = 32
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
    """Resolve, refuse the whole name if any address is refused, then connect to a checked
    address (never to the name, which could resolve anew)."""
    host, port = conn._dns_host, conn.port  # type: ignore[attr-defined]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))
    for text in addresses:
        problem = address_problem(ipaddress.ip_address(text))
        if problem:
            raise DestinationRefused(f"{conn.host} resolves to {problem}")
    # Each checked address in turn, all within the one connect timeout.
    timeout = conn.timeout
    deadline = time.monotonic() + timeout if isinstance(timeout, int | float) else None
    last: Exception | None = None
    try:
        for text in addresses:
            if deadline is not None:
                conn.timeout = deadline - time.monotonic()
                if conn.timeout <= 0:
                    break
            conn._dns_host = text  # type: ignore[attr-defined]
            try:
                sock = HTTPConnection._new_conn(conn)
            except HTTPError as exc:  # refused or timed out: try the next checked address
                last = exc
            else:
                _watch_socket(sock)
                return sock
    finally:
        conn._dns_host, conn.timeout = host, timeout  # type: ignore[attr-defined]
    if last is None:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out")
    raise last


class GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.sock is not None:  # a kept-alive connection: its socket is new to this attempt
            _watch_socket(self.sock)
        super().request(*args, **kwargs)


class GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.sock is not None:
            _watch_socket(self.sock)
        super().request(*args, **kwargs)


class GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


# --- the deadline of one attempt ------------------------------------------------------------


class _Attempt:
    """One request in flight: its deadline and the sockets it uses (one, or a few while
    connecting to a name with several addresses)."""

    __slots__ = ("deadline", "done", "expired", "sockets")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.done = False


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's method, also for a TLS one: it wakes a read blocked in another
        # thread (SSLSocket.shutdown would first drop its TLS state under that read's feet).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed or never connected
        pass


class _Watchdog:
    """Shuts down the sockets of attempts that reach their deadline. One thread, asleep
    until the earliest deadline; a finished attempt just stays in the heap until then."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._order = itertools.count()
        threading.Thread(target=self._run, name="webhook-deadline", daemon=True).start()

    def watch(self, attempt: _Attempt) -> None:
        with self._cond:
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._heap[0][2] is attempt:
                self._cond.notify()

    def attach(self, attempt: _Attempt, sock: socket.socket) -> None:
        with self._cond:
            if attempt.expired:  # the deadline passed while connecting
                _shut(sock)
            elif not attempt.done:
                attempt.sockets.append(sock)

    def finish(self, attempt: _Attempt) -> bool:
        """Stop watching `attempt`; True if its deadline passed first."""
        with self._cond:
            attempt.done = True
            attempt.sockets.clear()
            return attempt.expired

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    attempt = heapq.heappop(self._heap)[2]
                    if not attempt.done:
                        attempt.expired = True
                        for sock in attempt.sockets:
                            _shut(sock)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_watchdog: _Watchdog | None = None
_current = threading.local()


def _watching(deadline: float) -> _Attempt:
    global _watchdog
    if _watchdog is None:
        with _lock:
            if _watchdog is None:
                _watchdog = _Watchdog()
    attempt = _Attempt(deadline)
    _watchdog.watch(attempt)
    _current.attempt = attempt
    return attempt


def _watch_socket(sock: socket.socket) -> None:
    """Put `sock` under this thread's current deadline (if a request is being made)."""
    attempt: _Attempt | None = getattr(_current, "attempt", None)
    if attempt is not None and _watchdog is not None:
        _watchdog.attach(attempt, sock)


def _unwatch(attempt: _Attempt) -> bool:
    _current.attempt = None
    assert _watchdog is not None
    return _watchdog.finish(attempt)


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[object, ...]
    scheme: str
    host: str
    port: int
    path: str
    problem: str | None


_lock = threading.Lock()
# Destinations come and go: the least recently used pools are closed beyond these bounds.
_pools: BoundedCache[tuple[object, ...], HTTPConnectionPool] = BoundedCache(
    max_entries=200, on_evict=HTTPConnectionPool.close, clear_in_child=True
)
_targets: BoundedCache[tuple[str, tuple[object, ...]], _Target] = BoundedCache(
    max_entries=1000, clear_in_child=True
)


def _forget_watchdog() -> None:
    """In a forked child: the parent's watchdog thread does not exist there (and its pools,
    whose sockets are never shared, are forgotten by `clear_in_child`)."""
    global _lock, _watchdog
    _lock = threading.Lock()
    _watchdog = None


os.register_at_fork(after_in_child=_forget_watchdog)


def _target(url: str) -> _Target:
    policy = tuple(settings.WEBHOOK_ALLOWED_NETWORKS)
    cached = _targets.get((url, policy))
    if cached is not None:
        return cached
    problem = url_problem(url)
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = (parts.port if not problem else None) or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = _Target((scheme, host, port, policy), scheme, host, port, path, problem)
    _targets.set((url, policy), target)
    return target


@dataclass(frozen=True, slots=True)
class Tls:
    """A webhook's own TLS settings (PEM text): CAs to trust besides the system's, and a
    client certificate with its key for receivers that check one (mTLS)."""

    ca_bundle: str = ""
    client_cert: str = ""
    client_key: str = field(default="", repr=False)

    @property
    def fingerprint(self) -> str:
        """Tells settings apart in a pool key without keeping the key material in it."""
        parts = (self.ca_bundle, self.client_cert, self.client_key)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest() if any(parts) else ""


def tls_context(tls: Tls) -> ssl.SSLContext:
    """A verifying context: system CAs plus `tls.ca_bundle`, host names checked, and the
    client certificate loaded. Raises ssl.SSLError or ValueError on bad PEM."""
    context = ssl.create_default_context()
    if tls.ca_bundle:
        context.load_verify_locations(cadata=tls.ca_bundle)
    if tls.client_cert:
        # ssl reads a certificate chain only from files: written to a private directory
        # (mode 0700) and removed as soon as it is loaded.
        with tempfile.TemporaryDirectory(prefix="webhook-tls-") as folder:
            cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert.write_text(tls.client_cert)
            key.touch(mode=0o600)
            key.write_text(tls.client_key)
            context.load_cert_chain(cert, key)
    return context


def _pool(target: _Target, tls: Tls | None) -> HTTPConnectionPool:
    https = target.scheme == "https"
    fingerprint = tls.fingerprint if https and tls is not None else ""
    key = (*target.key, fingerprint)
    pool = _pools.get(key)
    if pool is None:
        options: dict[str, Any] = {}
        if fingerprint:
            assert tls is not None
            options["ssl_context"] = tls_context(tls)
        cls = GuardedHTTPSPool if https else GuardedHTTPPool
        new = cls(
            target.host, target.port, maxsize=POOL_MAXSIZE, block=False, retries=False, **options
        )
        pool = _pools.setdefault(key, new)
        if pool is not new:  # another thread made one first (this one never connected)
            new.close()
    return pool


def pools_close() -> None:
    """Close every kept-alive connection of this process."""
    _pools.clear()


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


def _classify(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, NameResolutionError | socket.gaierror):
            return "dns"
        if isinstance(cause, NewConnectionError):  # a subclass of urllib3's TimeoutError
            return "connect"
        if isinstance(cause, Urllib3Timeout | socket.timeout):
            return "timeout"
        if isinstance(cause, SSLError | ssl.SSLError | CertificateError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return "connect"


# OpenSSL's X509_V_ERR_* codes of the failures an operator can act on.
_UNTRUSTED = {2, 18, 19, 20, 21, 27}
_EXPIRED, _NOT_YET_VALID = 10, 9
_WRONG_NAME = {62, 64}


def _tls_problem(exc: BaseException, host: str) -> str:
    """A failed handshake in plain words: which check failed, and what to do about it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            code = cause.verify_code
            if code in _UNTRUSTED:
                return (
                    f"TLS: the certificate of {host} is not signed by a trusted CA (unknown "
                    "CA: add the CA that issued it to the webhook's CA bundle)"
                )
            if code == _EXPIRED:
                return f"TLS: the certificate of {host} has expired"
            if code == _NOT_YET_VALID:
                return f"TLS: the certificate of {host} is not valid yet (check the clocks)"
            if code in _WRONG_NAME:
                return (
                    f"TLS: the certificate {host} presented is for another host name, not "
                    f"{host} (wrong host name)"
                )
            return f"TLS: the certificate of {host} was refused: {cause.verify_message}"
        if isinstance(cause, CertificateError):
            return f"TLS: the certificate {host} presented is for another host name ({cause})"
        if isinstance(cause, ssl.SSLError) and cause.reason in (
            "TLSV13_ALERT_CERTIFICATE_REQUIRED",
            "SSLV3_ALERT_BAD_CERTIFICATE",
            "TLSV1_ALERT_UNKNOWN_CA",
            "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        ):
            return (
                f"TLS: {host} refused the connection because of our client certificate "
                f"(missing or not trusted there: {cause.reason})"
            )
        if isinstance(cause, ssl.SSLEOFError):
            # TLS 1.3: a receiver may refuse our client certificate by closing before its
            # alert reaches us.
            return (
                f"TLS: {host} closed the connection during the handshake (a receiver that "
                "requires a client certificate does so when it gets none, or one it does not "
                "trust)"
            )
        cause = cause.__cause__ or cause.__context__
    return f"TLS: the handshake with {host} failed: {exc}"


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    method: str = "POST",
    tls: Tls | None = None,
    excerpt_limit: int = RESPONSE_EXCERPT,
) -> Response:
    """POST (or PUT, PATCH: `method`) `body` to `url`, all of it within `timeout` seconds
    (WEBHOOK_TIMEOUT). Never raises for network trouble: the Response says what happened.
    `tls`: the webhook's own TLS settings; `excerpt_limit`: how much of the response body to
    keep."""
    timeout = timeout or settings.WEBHOOK_TIMEOUT
    target = _target(url)
    if target.problem:
        return Response(error_class="policy", error=target.problem)
    started = time.perf_counter()
    attempt = _watching(time.monotonic() + timeout)
    reply = None
    try:
        try:
            reply = _pool(target, tls).urlopen(
                method,
                target.path,
                body=body,
                headers={**headers, "User-Agent": USER_AGENT},
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=Timeout(connect=timeout, read=timeout),
                preload_content=False,
                release_conn=False,
            )
            excerpt = reply.read(excerpt_limit) or b""
            # Drain a small remainder so the connection can be reused; drop a large one.
            if len(reply.read(DRAIN_LIMIT) or b"") >= DRAIN_LIMIT:
                reply.close()
        finally:
            # Before the connection goes back to the pool, where another thread may take it.
            expired = _unwatch(attempt)
        if expired:  # what was read may be partial, and the socket is shut
            reply.close()
            return _timed_out(timeout, started)
    except DestinationRefused as exc:
        return Response(error_class="policy", error=str(exc), latency_ms=_ms(started))
    except (HTTPError, OSError, ValueError) as exc:
        if reply is not None:
            reply.close()
        if expired:
            return _timed_out(timeout, started)
        error_class = _classify(exc)
        error = _tls_problem(exc, target.host) if error_class == "tls" else str(exc)
        return Response(error_class=error_class, error=error[:1000], latency_ms=_ms(started))
    finally:
        if reply is not None:
            reply.release_conn()
    code = reply.status
    ok = 200 <= code < 300
    return Response(
        status_code=code,
        # No NUL: a database text column cannot hold one.
        body=excerpt.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        latency_ms=_ms(started),
        error_class="" if ok else "http",
        error="" if ok else f"HTTP {code} {reply.reason or ''}".strip(),
        retry_after=_retry_after(reply.headers.get("Retry-After")),
        headers=dict(reply.headers),
    )


def _timed_out(timeout: float, started: float) -> Response:
    return Response(
        error_class="timeout",
        error=f"no complete response within {timeout:g} s",
        latency_ms=_ms(started),
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def is_permanent(response: Response) -> bool:
    """Failures that retrying cannot fix: policy refusals, a body template that failed (nothing
    was sent), redirects (never followed) and 4xx other than 408, 425 and 429. Connection
    errors, timeouts and 5xx are worth retrying."""
    if response.error_class in ("policy", "template"):
        return True
    code = response.status_code
    return code is not None and 300 <= code < 500 and code not in (408, 425, 429)
