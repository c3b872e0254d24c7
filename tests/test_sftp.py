"""The SFTP receiver, driven by a real SFTP client (asyncssh) over TCP on 127.0.0.1.

The receiver runs in its own thread and event loop, as `manage.py run_sftp` would; it reads
CDR sources from the database on other threads, hence `transactional_db`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from django.core.management import call_command
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from cdr.models import Cdr, CdrFile
from sftp.models import CdrSource
from sftp.server import Receiver, host_keys_load
from sftp.services import cdr_source_authenticate, cdr_source_create
from sftp.throttle import LoginThrottle
from tests.conftest import ROOT
from tests.test_dropfolder import wait_for
from tests.test_settings import run_check
from tests.test_webhooks import make_webhook
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
SAMPLE = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630"
PASSWORD = "billing-secret-1"
HOST_KEY = asyncssh.generate_private_key("ssh-ed25519")


class RunningReceiver:
    """A receiver listening on an ephemeral port, served from a background event loop."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(receiver.listen("127.0.0.1", 0))
        self.port: int = self.server.get_port()

    def _call(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def start_sftp(settings: Any) -> Iterator[Callable[..., RunningReceiver]]:
    """Start a receiver delivering into settings.CDR_INCOMING_DIR (as set at call time)."""
    running: list[RunningReceiver] = []

    def start(**options: Any) -> RunningReceiver:
        options.setdefault("max_file_bytes", settings.SFTP_MAX_FILE_BYTES)
        options.setdefault("max_sessions", settings.SFTP_MAX_SESSIONS)
        receiver = Receiver(
            host_keys=[HOST_KEY], incoming=Path(settings.CDR_INCOMING_DIR), **options
        )
        running.append(RunningReceiver(receiver))
        return running[-1]

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def incoming(settings: Any, tmp_path: Path) -> Path:
    settings.CDR_INCOMING_DIR = tmp_path / "incoming"
    settings.CDR_INCOMING_DIR.mkdir()
    return settings.CDR_INCOMING_DIR


@pytest.fixture
def source(transactional_db: None) -> CdrSource:
    return cdr_source_create(name="Cluster 1", username="cucm1", password=PASSWORD)


@pytest.fixture
def sftp(incoming: Path, source: CdrSource, start_sftp: Callable) -> RunningReceiver:
    return start_sftp()


def connect(
    port: int, username: str = "cucm1", password: str = PASSWORD, cipher: str = "aes256-ctr"
) -> asyncssh.connection._ACMWrapper:
    # What CUCM 12+ does: password authentication, a CTR cipher and nothing else.
    return asyncssh.connect(
        "127.0.0.1",
        port,
        username=username,
        password=password,
        preferred_auth="password",
        encryption_algs=[cipher],
        known_hosts=None,
        client_keys=None,
        agent_path=None,
    )


async def upload(port: int, name: str, data: bytes, **login: str) -> None:
    async with connect(port, **login) as conn, conn.start_sftp_client() as client:
        async with client.open(name, "wb") as remote:
            await remote.write(data)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def staged(incoming: Path) -> list[Path]:
    return list((incoming / ".sftp").glob("*/*"))


@pytest.mark.parametrize("cipher", ["aes128-ctr", "aes192-ctr", "aes256-ctr"])
def test_an_upload_appears_in_the_drop_folder_under_its_name(
    sftp: RunningReceiver, incoming: Path, samples: Path, cipher: str
) -> None:
    data = (samples / SAMPLE).read_bytes()
    asyncio.run(upload(sftp.port, Path(SAMPLE).name, data, cipher=cipher))
    assert files_in(incoming) == [Path(SAMPLE).name]
    assert (incoming / Path(SAMPLE).name).read_bytes() == data
    assert staged(incoming) == []
    source = CdrSource.objects.get()
    assert (source.files_received, source.bytes_received) == (1, len(data))
    assert source.last_upload_at is not None


def test_a_resent_file_does_not_replace_the_waiting_one(
    sftp: RunningReceiver, incoming: Path
) -> None:
    asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_1", b"first"))
    asyncio.run(upload(sftp.port, "/cdr_C_01_202001010000_1", b"second"))
    assert files_in(incoming) == ["cdr_C_01_202001010000_1", "cdr_C_01_202001010000_1.1"]
    assert (incoming / "cdr_C_01_202001010000_1").read_bytes() == b"first"
    assert CdrSource.objects.get().files_received == 2


@pytest.mark.parametrize(
    ("username", "password"), [("cucm1", "wrong-password"), ("nobody", PASSWORD)]
)
def test_a_wrong_login_is_refused(
    sftp: RunningReceiver, incoming: Path, username: str, password: str
) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(upload(sftp.port, "x", b"x", username=username, password=password))
    assert files_in(incoming) == []


def test_a_disabled_source_is_refused(
    sftp: RunningReceiver, incoming: Path, source: CdrSource
) -> None:
    CdrSource.objects.filter(pk=source.pk).update(enabled=False)
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(upload(sftp.port, "x", b"x"))


def test_paths_outside_the_folder_links_and_folders_are_refused(
    sftp: RunningReceiver, incoming: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    refused: list[str] = []

    async def attempts() -> None:
        async with connect(sftp.port) as conn, conn.start_sftp_client() as client:
            tries: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("../x", lambda: client.open("../x", "wb")),
                ("/../x", lambda: client.open("/../x", "wb")),
                ("abs", lambda: client.open(str(outside), "wb")),
                ("read passwd", lambda: client.open("/etc/passwd", "rb")),
                ("stat passwd", lambda: client.stat("/etc/passwd")),
                ("list ..", lambda: client.listdir("..")),
                ("subfolder", lambda: client.open("sub/x", "wb")),
                ("symlink", lambda: client.symlink("/etc/passwd", "link")),
                ("hardlink", lambda: client.link("/etc/passwd", "link")),
                ("readlink", lambda: client.readlink("link")),
                ("mkdir", lambda: client.mkdir("sub")),
                ("rename", lambda: client.rename("a", "b")),
            ]
            for label, attempt in tries:
                try:
                    await attempt()
                except asyncssh.SFTPError:
                    refused.append(label)

    asyncio.run(attempts())
    assert len(refused) == 12, refused
    assert not outside.exists()
    assert files_in(incoming) == [] and staged(incoming) == []


def test_names_the_drop_folder_ignores_are_refused(sftp: RunningReceiver, incoming: Path) -> None:
    for name in ("_cdr_C_01_202001010000_1", ".hidden", "cdr.part", "cdr.tmp"):
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            asyncio.run(upload(sftp.port, name, b"x"))
    assert files_in(incoming) == []


def test_a_source_bound_to_a_cluster_refuses_files_of_another(
    sftp: RunningReceiver, incoming: Path, source: CdrSource
) -> None:
    CdrSource.objects.filter(pk=source.pk).update(cluster_id="StandAloneCluster")
    with pytest.raises(asyncssh.SFTPPermissionDenied):
        asyncio.run(upload(sftp.port, "cdr_OtherCluster_01_202001010000_1", b"x"))
    asyncio.run(upload(sftp.port, "cdr_StandAloneCluster_01_202001010000_1", b"x"))
    assert files_in(incoming) == ["cdr_StandAloneCluster_01_202001010000_1"]


def test_an_interrupted_upload_leaves_nothing(sftp: RunningReceiver, incoming: Path) -> None:
    async def interrupted() -> None:
        conn = await connect(sftp.port)
        client = await conn.start_sftp_client()
        remote = await client.open("cdr_C_01_202001010000_1", "wb")
        await remote.write(b"half a file")
        assert len(staged(incoming)) == 1
        conn.abort()  # the TCP connection drops; the client never closes the file

    asyncio.run(interrupted())
    wait_for(lambda: staged(incoming) == [], timeout=10)
    assert files_in(incoming) == []
    assert CdrSource.objects.get().files_received == 0


def test_listing_shows_only_the_sources_own_files(
    sftp: RunningReceiver, incoming: Path, source: CdrSource
) -> None:
    cdr_source_create(name="Cluster 2", username="cucm2", password=PASSWORD)
    asyncio.run(upload(sftp.port, "cdr_C1_01_202001010000_1", b"one"))
    asyncio.run(upload(sftp.port, "cdr_C2_01_202001010000_1", b"two!", username="cucm2"))

    async def listing(username: str) -> tuple[list[str], int]:
        async with connect(sftp.port, username=username) as conn:
            async with conn.start_sftp_client() as client:
                names = sorted(await client.listdir("/"))
                assert names == sorted(await client.listdir("."))
                return names, (await client.stat(names[-1])).size

    assert asyncio.run(listing("cucm1")) == ([".", "cdr_C1_01_202001010000_1"], 3)
    assert asyncio.run(listing("cucm2")) == ([".", "cdr_C2_01_202001010000_1"], 4)


def test_a_file_over_the_size_limit_is_refused_and_removed(
    incoming: Path, source: CdrSource, start_sftp: Callable
) -> None:
    sftp = start_sftp(max_file_bytes=1000)
    with pytest.raises(asyncssh.SFTPFailure, match="SFTP_MAX_FILE_BYTES"):
        asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_1", b"x" * 1001))
    asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_2", b"x" * 1000))
    assert files_in(incoming) == ["cdr_C_01_202001010000_2"]
    assert staged(incoming) == []
    assert CdrSource.objects.get().bytes_received == 1000


def test_repeated_failures_throttle_the_login(
    incoming: Path, source: CdrSource, start_sftp: Callable
) -> None:
    sftp = start_sftp(throttle=LoginThrottle(max_failures=3, base_delay=1.0))
    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(upload(sftp.port, "x", b"x", password="guess"))
    with pytest.raises(asyncssh.PermissionDenied):  # the right password, but too soon
        asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_1", b"x"))
    cdr_source_create(name="Cluster 2", username="cucm2", password=PASSWORD)
    asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_2", b"x", username="cucm2"))
    time.sleep(1.1)
    asyncio.run(upload(sftp.port, "cdr_C_01_202001010000_1", b"x"))
    assert files_in(incoming) == ["cdr_C_01_202001010000_1", "cdr_C_01_202001010000_2"]


def test_throttle_backoff_doubles_and_success_clears_it() -> None:
    throttle = LoginThrottle(max_failures=2, base_delay=10, max_delay=25)
    throttle.failure("u", "10.0.0.1", now=0)
    assert throttle.blocked_for("u", "10.0.0.1", now=0) == 0
    throttle.failure("u", "10.0.0.1", now=0)
    assert throttle.blocked_for("u", "10.0.0.1", now=0) == 10
    throttle.failure("u", "10.0.0.1", now=0)
    assert throttle.blocked_for("u", "10.0.0.1", now=0) == 20
    throttle.failure("u", "10.0.0.1", now=0)
    assert throttle.blocked_for("u", "10.0.0.1", now=0) == 25
    assert throttle.blocked_for("u", "10.0.0.2", now=0) == 0
    throttle.success("u", "10.0.0.1")
    assert throttle.blocked_for("u", "10.0.0.1", now=0) == 0


def test_an_address_trying_many_usernames_is_throttled() -> None:
    throttle = LoginThrottle(max_failures=2, base_delay=10)
    for n in range(8):
        throttle.failure(f"user{n}", "10.0.0.9", now=0)
    assert throttle.blocked_for("someone-else", "10.0.0.9", now=0) == 10


def test_exec_shell_and_forwarding_are_refused(sftp: RunningReceiver) -> None:
    async def attempts() -> list[str]:
        refused = []
        async with connect(sftp.port) as conn:
            tries: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("exec", lambda: conn.run("id", check=True)),
                ("shell", lambda: conn.create_process()),
                ("direct-tcpip", lambda: conn.open_connection("127.0.0.1", sftp.port)),
                ("tcpip-forward", lambda: conn.forward_remote_port("", 0, "127.0.0.1", 1)),
            ]
            for label, attempt in tries:
                try:
                    await attempt()
                except (asyncssh.ChannelOpenError, asyncssh.ChannelListenError):
                    refused.append(label)
        return refused

    assert asyncio.run(attempts()) == ["exec", "shell", "direct-tcpip", "tcpip-forward"]


def test_sessions_beyond_the_cap_are_refused(
    incoming: Path, source: CdrSource, start_sftp: Callable
) -> None:
    sftp = start_sftp(max_sessions=1)

    async def two() -> None:
        async with connect(sftp.port):
            with pytest.raises((asyncssh.Error, OSError)):
                await upload(sftp.port, "cdr_C_01_202001010000_1", b"x")
        await upload(sftp.port, "cdr_C_01_202001010000_2", b"x")

    asyncio.run(two())
    assert files_in(incoming) == ["cdr_C_01_202001010000_2"]


def test_host_keys_are_created_once_and_kept(tmp_path: Path) -> None:
    first = host_keys_load(tmp_path)
    second = host_keys_load(tmp_path)
    assert [k.get_algorithm() for k in first] == ["ssh-ed25519", "ssh-rsa"]
    assert [k.get_fingerprint() for k in first] == [k.get_fingerprint() for k in second]
    for name in ("sftp_host_ed25519_key", "sftp_host_rsa_key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sftp_host_ed25519_key",
        "sftp_host_rsa_key",
    ]


def test_abandoned_partial_uploads_are_cleaned_at_start(tmp_path: Path) -> None:
    receiver = Receiver(host_keys=[HOST_KEY], incoming=tmp_path, max_file_bytes=1, max_sessions=1)
    old = receiver.staging("cucm1") / "old.part"
    fresh = receiver.staging("cucm1") / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert receiver.staging_clean() == 1
    assert not old.exists() and fresh.exists()


# --- the CDR source API and admin ----------------------------------------------------------


@pytest.fixture
def staff_api(transactional_db: None) -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_user("ops", is_staff=True))
    return client


def test_api_creates_a_source_with_a_hashed_password_never_returned(
    staff_api: APIClient,
) -> None:
    body = {"name": "HQ cluster", "username": "hq", "password": PASSWORD, "cluster_id": "HQ"}
    response = staff_api.post("/api/v1/cdr-sources/", body, format="json")
    assert response.status_code == 201, response.json()
    assert "password" not in response.json()
    assert response.json()["files_received"] == 0
    stored = CdrSource.objects.get()
    assert stored.password != PASSWORD and check_password(PASSWORD, stored.password)
    listed = staff_api.get("/api/v1/cdr-sources/").json()
    assert listed["count"] == 1 and "password" not in listed["results"][0]
    assert cdr_source_authenticate("hq", PASSWORD) == stored


def test_api_changes_the_password_only_when_given(staff_api: APIClient, source: CdrSource) -> None:
    url = f"/api/v1/cdr-sources/{source.pk}/"
    assert staff_api.patch(url, {"enabled": False}, format="json").status_code == 200
    assert check_password(PASSWORD, CdrSource.objects.get().password)
    assert staff_api.patch(url, {"password": "new-secret-2"}, format="json").status_code == 200
    assert cdr_source_authenticate("cucm1", "new-secret-2") is None  # still disabled
    staff_api.patch(url, {"enabled": True}, format="json")
    assert cdr_source_authenticate("cucm1", "new-secret-2") == source
    assert cdr_source_authenticate("cucm1", PASSWORD) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A", "username": "a", "password": "short"}, "password"),
        ({"name": "A", "username": "../a", "password": PASSWORD}, "username"),
        ({"name": "A", "username": "a"}, "password"),
        ({"name": "Cluster 1", "username": "a", "password": PASSWORD}, "name"),
    ],
)
def test_api_refuses_bad_sources(
    staff_api: APIClient, source: CdrSource, body: dict[str, str], field: str
) -> None:
    response = staff_api.post("/api/v1/cdr-sources/", body, format="json")
    assert response.status_code == 400 and field in response.json()


def test_api_writes_need_staff(transactional_db: None) -> None:
    client = APIClient()
    client.force_authenticate(User.objects.create_user("viewer"))
    body = {"name": "A", "username": "a", "password": PASSWORD}
    assert client.post("/api/v1/cdr-sources/", body, format="json").status_code == 403
    assert client.get("/api/v1/cdr-sources/").status_code == 200


def test_admin_sets_the_password_hashed(client: Any, source: CdrSource) -> None:
    client.force_login(User.objects.create_superuser("root", password="x"))
    url = f"/admin/sftp/cdrsource/{source.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and source.password not in page.content.decode()
    form = {"name": "Cluster 1", "username": "cucm1", "new_password": "", "enabled": "on"}
    assert client.post(url, form).status_code == 302
    assert check_password(PASSWORD, CdrSource.objects.get().password)  # empty keeps it
    form["new_password"] = "admin-set-secret"
    assert client.post(url, form).status_code == 302
    assert check_password("admin-set-secret", CdrSource.objects.get().password)
    add = {"name": "New", "username": "new", "new_password": "", "enabled": "on"}
    assert "needs a password" in client.post("/admin/sftp/cdrsource/add/", add).content.decode()


@pytest.mark.parametrize(
    ("name", "value"),
    [("SFTP_PORT", "ssh"), ("SFTP_MAX_FILE_BYTES", "0"), ("SFTP_MAX_SESSIONS", "-1")],
)
def test_a_bad_sftp_setting_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    result = run_check({name: value})
    assert result.returncode != 0 and name in result.stderr


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_uploaded_sample_is_ingested_and_fires_the_webhook(
    process_env: dict[str, str],
    start_worker: Callable,
    start_sftp: Callable,
    httpserver: HTTPServer,
    samples: Path,
    settings: Any,
) -> None:
    settings.CDR_SETTLE_SECONDS = 0.01
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_webhook(httpserver.url_for("/hook"))
    cdr_source_create(name="Cluster 1", username="cucm1", password=PASSWORD)
    start_worker()
    sftp = start_sftp()
    asyncio.run(upload(sftp.port, Path(SAMPLE).name, (samples / SAMPLE).read_bytes()))
    time.sleep(0.05)
    call_command("watch_cdr", "--once")
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count() == 6)
    assert CdrFile.objects.get().name == Path(SAMPLE).name
    assert Cdr.objects.count() == 6 and len(httpserver.log) == 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_run_sftp_serves_with_persistent_host_keys_and_stops_on_sigterm(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    cdr_source_create(name="Cluster 1", username="cucm1", password=PASSWORD)
    port = free_port()
    env = {**process_env, "DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_sftp", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        incoming = Path(process_env["CDR_INCOMING_DIR"])

        def delivered() -> bool:
            try:
                asyncio.run(upload(port, "cdr_C_01_202001010000_1", b"x"))
            except OSError:  # not listening yet
                return False
            return True

        wait_for(delivered)
        assert files_in(incoming) == ["cdr_C_01_202001010000_1"]
        assert (tmp_path / "data" / "sftp_host_ed25519_key").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "host key ssh-ed25519 SHA256:" in output
