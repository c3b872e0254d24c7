"""Delivery benchmark: a real Celery worker on Redis posting to a fast local receiver.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchdeliver \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/7 .venv/bin/python bench/deliver.py

1. Starts a receiver in its own process (asyncio, HTTP/1.1 keep-alive, answers 200 and
   notes when each `webhook-id` arrived) and measures its ceiling with a plain concurrent
   client, so it is known not to be the bottleneck.
2. Drops, creates and migrates the database, installs a license signed by a fresh key,
   creates one signed webhook without conditions (every record matches) to the receiver.
3. Throughput: ingests a `--deliveries`-record file while no worker runs (the tasks, one per
   batch of deliveries, wait in Redis), starts `celery worker -Q webhooks,celery
   --concurrency 2 --pool prefork` and reports deliveries/s from the first to the last
   receipt, with the CPU the worker used.
4. Latency: with the worker warm, ingests a 2-record file every 100 ms (20 matched records/s)
   for `--seconds`, and reports commit → receipt latency p50/p95/p99 (same clock).

The database is dropped and recreated: never point DATABASE_URL at one you care about (its
name must start with "bench" or "helper").
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ingest import SCRATCH, django_setup

ROOT = Path(__file__).resolve().parent.parent
TICK = 0.1  # seconds between latency files
RECORDS_PER_TICK = 2


# --- receiver (its own process) ---------------------------------------------------------


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, arrivals: dict[str, float]
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            length, event_id, path = 0, "", head.split(b" ", 2)[1]
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    event_id = value.strip().decode()
            if length:
                await reader.readexactly(length)
            if path == b"/arrivals":
                body = json.dumps(arrivals).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:
                if event_id:
                    arrivals[event_id] = arrived
                writer.write(ok)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def receiver_main(port: int, ready: multiprocessing.synchronize.Event) -> None:
    arrivals: dict[str, float] = {}

    async def serve() -> None:
        server = await asyncio.start_server(
            lambda r, w: _serve_connection(r, w, arrivals), "127.0.0.1", port, backlog=512
        )
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def arrivals_get(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/arrivals")
    return json.loads(conn.getresponse().read())


def receiver_ceiling(port: int, seconds: float = 2.0, clients: int = 4) -> float:
    """Requests/s a plain keep-alive client in threads gets from the receiver."""
    body = b"x" * 3000
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.perf_counter() < stop:
            conn.request("POST", "/ceiling", body=body, headers={"Content-Type": "text/plain"})
            conn.getresponse().read()
            counts[slot] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


# --- appliance side -------------------------------------------------------------------


def database_recreate(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith(("bench", "helper")):
        raise SystemExit(
            f"refusing to drop {name!r}: the benchmark's database names start bench or helper"
        )
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def environment() -> tuple[dict[str, str], object]:
    """The environment of this process and the worker, and the license signing key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sys.path.insert(0, str(ROOT))
    from licensing.verification import key_id, public_key_b64

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL=postgres://…/bench… (PostgreSQL, dropped and made anew)")
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        raise SystemExit("set CELERY_BROKER_URL=redis://…/<db> (a Redis database of its own)")
    key = Ed25519PrivateKey.generate()
    public = {key_id(key.public_key()): public_key_b64(key.public_key())}
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="calltelemetry.settings",
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
        LICENSE_PUBLIC_KEYS=json.dumps(public),
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("DATA_DIR", str(SCRATCH / "var"))
    return env, key


def license_install_fresh(key: object) -> None:
    from licensing.services import license_install
    from licensing.verification import issue, key_id

    text = issue(
        key,  # type: ignore[arg-type]
        kid=key_id(key.public_key()),  # type: ignore[attr-defined]
        customer="Bench Voice Ltd",
        expires_at=datetime.now(UTC) + timedelta(days=30),
        features=["cdr_webhooks"],
        limits={"webhooks": 50},
        grace_days=14,
    )
    license_install(text=text)


def queues_purge() -> None:
    from calltelemetry.celery import app

    with app.connection_for_write() as conn:
        for queue in ("celery", "webhooks"):
            conn.default_channel.queue_purge(queue)


class Worker:
    """`celery worker` as the appliance runs it, started as a child process."""

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.ready = threading.Event()
        self.output: deque[str] = deque(maxlen=40)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "celery", "-A", "calltelemetry", "worker", "--loglevel", "INFO"),
                *("--queues", "webhooks,celery", "--pool", "prefork"),
                *("--concurrency", str(concurrency)),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if " ready." in line:
                self.ready.set()

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and its pool processes so far."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, summed by program name
    (the worker and the receiver are told apart by their command line)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if "celery" in cmdline and "worker" in cmdline:
            name = "celery worker"
        elif "multiprocessing" in cmdline or "spawn_main" in cmdline:
            name = "receiver"
        elif int(entry.name) == os.getpid():
            name = "bench (ingest, polling)"
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def generated_files(folder: Path, *, records: int, per_file: int | None, seed: int) -> list[Path]:
    from cdr.generator import generate

    done = folder / "DONE"
    if done.exists():
        return [Path(p) for p in json.loads(done.read_text())]
    paths = generate(folder, records=records, seed=seed, records_per_file=per_file)
    done.write_text(json.dumps([str(p) for p in paths]))
    return paths


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


def succeeded() -> int:
    from webhooks.models import Delivery

    return Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count()


def statements_per_delivery(webhook_id: int, batches: int = 4) -> float:
    """SQL statements the worker's path runs per delivery, in full batches (as the trigger
    and the sweeper enqueue them), counted in this process."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from webhooks.delivery import deliveries_attempt, new_event_id
    from webhooks.lifecycle import BATCH_MAX
    from webhooks.models import Delivery

    now = timezone.now()
    ids = [
        Delivery.objects.create(
            webhook_id=webhook_id, event_id=new_event_id(), body="{}", next_attempt_at=now
        ).pk
        for _ in range(BATCH_MAX * (batches + 1))
    ]
    deliveries_attempt(ids=ids[:BATCH_MAX])  # warm: license cache, HTTP connections
    with CaptureQueriesContext(connection) as queries:
        for start in range(BATCH_MAX, len(ids), BATCH_MAX):
            deliveries_attempt(ids=ids[start : start + BATCH_MAX])
    return len(queries) / (len(ids) - BATCH_MAX)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    receiver = multiprocessing.get_context("spawn").Process(
        target=receiver_main, args=(port, ready), daemon=True
    )
    receiver.start()
    if not ready.wait(10):
        raise SystemExit("the receiver did not start")
    ceiling = receiver_ceiling(port)

    env, key = environment()
    database_recreate(env["DATABASE_URL"])
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    django_setup(env)
    from django.db import transaction

    from cdr.models import Cdr
    from cdr.services import cdr_file_ingest
    from webhooks.delivery import generate_secret
    from webhooks.models import Delivery, Webhook
    from webhooks.trigger import WebhookTrigger

    license_install_fresh(key)
    webhook = Webhook.objects.create(
        name="bench receiver", url=f"http://127.0.0.1:{port}/hook", secret=generate_secret()
    )
    statements = statements_per_delivery(webhook.pk)
    Delivery.objects.all().delete()
    queues_purge()

    # (a) throughput: the tasks wait in Redis, then the worker drains them.
    big = generated_files(
        SCRATCH / f"deliver-{args.deliveries}", records=args.deliveries, per_file=None, seed=7
    )[0]
    cdr_file_ingest(path=big, source="bench")
    worker = Worker(env, args.concurrency)
    try:
        if not worker.ready.wait(60):
            raise SystemExit("the worker did not start:\n" + "".join(worker.output))
        cpu_before, busy_before = worker.cpu_seconds(), machine_busy()
        programs_before = cpu_by_program()
        wait_for(lambda: succeeded() >= args.deliveries, 300, "the throughput deliveries")
        cpu = worker.cpu_seconds() - cpu_before
        busy_after = machine_busy()
        programs_after = cpu_by_program()
        arrived = arrivals_get(port)
        times = sorted(arrived[e] for e in Delivery.objects.values_list("event_id", flat=True))
        throughput = (len(times) - 1) / (times[-1] - times[0])
        elapsed = times[-1] - times[0]
        machine = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])

        # (b) latency at a steady 20 matched records/s.
        ticks = round(args.seconds / TICK)
        files = generated_files(
            SCRATCH / f"deliver-latency-{ticks}",
            records=ticks * RECORDS_PER_TICK,
            per_file=RECORDS_PER_TICK,
            seed=8,
        )
        committed: dict[int, float] = {}
        commit_times: list[float] = []

        class CommitClock(WebhookTrigger):
            """The ingest's listener, on production's path (the statement's tail), which
            notes when its batch committed."""

            def statement(self, layout, rows, prepared):  # type: ignore[no-untyped-def]
                # Registered before the tail's own on_commit (the enqueue): runs first.
                transaction.on_commit(lambda: commit_times.append(time.time()))
                return super().statement(layout, rows, prepared)

        started = time.monotonic()
        for n, path in enumerate(files):
            time.sleep(max(0.0, started + n * TICK - time.monotonic()))
            commit_times.clear()
            record = cdr_file_ingest(path=path, source="bench", on_stored=CommitClock())
            # One batch per file: every record of it committed at that moment.
            committed.update(
                (cdr_id, commit_times[-1])
                for cdr_id in Cdr.objects.filter(file=record).values_list("pk", flat=True)
            )
        offered = len(committed) / (time.monotonic() - started)
        total = args.deliveries + len(committed)
        wait_for(lambda: succeeded() >= total, 60, "the latency deliveries")
        arrivals = arrivals_get(port)
        latencies = sorted(
            1000 * (arrivals[event_id] - committed[cdr_id])
            for event_id, cdr_id in Delivery.objects.filter(cdr_id__in=committed).values_list(
                "event_id", "cdr_id"
            )
        )
    finally:
        worker.stop()
        receiver.terminate()

    header = f"  {'figure':<34} {'unit':<14} {'median':>10} {'baseline':>10} {'ratio':>7}"
    print(f"receiver ceiling (4 keep-alive client threads, 3 KB bodies): {ceiling:,.0f} requests/s")
    from webhooks.lifecycle import BATCH_MAX

    print(
        f"worker: {args.concurrency} prefork processes on Redis, batches of {BATCH_MAX}; ", end=""
    )
    print(f"SQL statements per delivery: {statements:.2f}")
    print(f"\n{header}\n  {'-' * (len(header) - 2)}")
    rows = [
        ("deliveries, first → last receipt", "deliveries/s", throughput, ceiling),
        ("commit → receipt p50", "ms", percentile(latencies, 0.50), None),
        ("commit → receipt p95", "ms", percentile(latencies, 0.95), None),
        ("commit → receipt p99", "ms", percentile(latencies, 0.99), None),
    ]
    for label, unit, value, baseline in rows:
        base = f"{baseline:>10,.0f} {value / baseline:>6.2f}x" if baseline else f"{'':>10} {'':>7}"
        print(f"  {label:<34} {unit:<14} {value:>10,.1f} {base}")
    print("  (baseline: the receiver's own ceiling)")
    print(
        f"\n  throughput: {args.deliveries:,} deliveries in {elapsed:.1f} s; worker CPU "
        f"{1000 * cpu / args.deliveries:.2f} ms per delivery ({cpu / elapsed:.0%} of one core); "
        f"whole machine {machine:.0%} busy"
    )
    used = {name: programs_after[name] - programs_before.get(name, 0.0) for name in programs_after}
    top = sorted(used.items(), key=lambda item: -item[1])[:6]
    print(
        "  CPU per delivery during the throughput run, by program (whole machine): "
        + ", ".join(f"{name} {1000 * seconds / args.deliveries:.2f} ms" for name, seconds in top)
    )
    print(
        f"  latency: {len(latencies)} deliveries, offered {offered:.1f} matched records/s, "
        f"max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
