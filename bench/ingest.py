"""Ingest benchmark: csv.reader floor vs CucmReader parse vs parse + store.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --records 50000          # SQLite in a scratch folder

Generates a 133-field CDR file (not timed), then measures in this process, `--runs` times
each, and reports the median records/s and the ratio to the floor: (a) Python's csv.reader
over the file, (b) CucmReader over the file, (c) cdr_file_ingest into empty tables (no
webhooks). Then it runs parse + store of `--memory-sizes` files in child processes and
reports each one's peak RSS: it must not grow with the file.

The database named by DATABASE_URL is created and migrated when needed and its cdr tables
are truncated before every measured store — never point it at a database you care about.
Without DATABASE_URL a SQLite file in a scratch folder is used, not the appliance's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path(os.environ.get("BENCH_DIR", Path(tempfile.gettempdir()) / "calltelemetry-bench"))


def environment() -> dict[str, str]:
    """The environment this process and its children run Django with."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "calltelemetry.settings"
    env.setdefault("DATA_DIR", str(SCRATCH / "var"))
    env.setdefault("DATABASE_URL", f"sqlite:///{SCRATCH / 'bench.sqlite3'}")
    return env


def postgres_database_create(url: str) -> None:
    """CREATE DATABASE if it does not exist (migrate cannot do that)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def database_prepare(env: dict[str, str]) -> None:
    if env["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
        postgres_database_create(env["DATABASE_URL"])
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
    )


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def tables_truncate() -> None:
    from django.core.management.color import no_style
    from django.db import connection

    from cdr.models import Call, CallKey, Cdr, CdrFile, Cmr, RecordLayout
    from webhooks.models import Delivery, DeliveryAttempt

    # Deliveries too: they point at records without a database foreign key, so no CASCADE
    # would reach them, and record ids start again at 1. Calls: each run assembles anew.
    models = (DeliveryAttempt, Delivery, Cdr, Cmr, CallKey, Call, CdrFile, RecordLayout)
    tables = [m._meta.db_table for m in models]
    # TRUNCATE … CASCADE on PostgreSQL; on SQLite plain DELETEs in the order above (its
    # cascade variant deletes in set order, parents before children, and trips the FKs).
    postgres = connection.vendor == "postgresql"
    statements = connection.ops.sql_flush(
        no_style(), tables, reset_sequences=True, allow_cascade=postgres
    )
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
        if postgres:
            # Every measured run starts from a fresh checkpoint, so that one falling due
            # (every ~1 GB of WAL here, about three runs) does not land in a run at random.
            cursor.execute("CHECKPOINT")


def generated_file(records: int) -> Path:
    """A 133-field CDR file of `records` rows, generated once and kept for later runs."""
    from cdr.generator import generate

    folder = SCRATCH / f"cdr-133-{records}"
    done = folder / "DONE"
    if done.exists():
        return Path(done.read_text())
    paths = generate(folder, records=records, generation=133, seed=1)
    path = next(p for p in paths if p.name.startswith("cdr_"))
    done.write_text(str(path))
    return path


def csv_floor(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        next(reader)
        return sum(1 for _ in reader)


def parse_only(path: Path) -> int:
    from cdr.parsing import CucmReader, open_binary

    with open_binary(path) as stream:
        return sum(1 for _ in CucmReader(stream))


def parse_and_store(path: Path) -> int:
    from cdr.services import cdr_file_ingest

    record = cdr_file_ingest(path=path, source="bench", evaluate_webhooks=False)
    if record.status != "done" or record.rejected_count:
        raise SystemExit(f"ingest did not succeed: {record.status} {record.error}")
    return record.stored_count


def measure(
    step: Callable[[Path], int],
    path: Path,
    records: int,
    runs: int,
    setup: Callable[[], None] | None = None,
) -> float:
    rates = []
    for _ in range(runs):
        if setup is not None:
            setup()  # not timed: emptying the tables is not part of an ingest
        started = time.perf_counter()
        seen = step(path)
        elapsed = time.perf_counter() - started
        if seen != records:
            raise SystemExit(f"{step.__name__} saw {seen} records, expected {records}")
        rates.append(records / elapsed)
    return statistics.median(rates)


def child_peak_rss(path: Path) -> None:
    """Child mode: parse + store one file and print this process's peak RSS."""
    tables_truncate()
    stored = parse_and_store(path)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"stored": stored, "peak_rss_kib": peak_kib}))


def peak_rss(env: dict[str, str], records: int) -> tuple[int, float]:
    path = generated_file(records)
    # A fresh interpreter per size, so one run's peak cannot hide in another's.
    child = subprocess.run(
        [sys.executable, __file__, "--child-store", str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if child.returncode:
        raise SystemExit(f"the {records:,}-record child failed:\n{child.stderr}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if result["stored"] != records:
        raise SystemExit(f"child stored {result['stored']} of {records}")
    return records, result["peak_rss_kib"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--memory-sizes",
        default="200000,1000000",
        help="comma-separated record counts for the peak-RSS runs ('' to skip)",
    )
    parser.add_argument("--child-store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    env = environment()
    if args.child_store:
        django_setup(env)
        child_peak_rss(args.child_store)
        return
    database_prepare(env)
    django_setup(env)
    from django.db import connection

    path = generated_file(args.records)
    size_mb = path.stat().st_size / 1e6
    print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
    print(f"file: {path.name}, {args.records:,} records, 133 fields, {size_mb:,.0f} MB")
    print(f"median of {args.runs} runs:")
    floor = measure(csv_floor, path, args.records, args.runs)
    rows = [
        ("csv.reader (floor)", floor),
        ("CucmReader parse", measure(parse_only, path, args.records, args.runs)),
        (
            "parse + store",
            measure(parse_and_store, path, args.records, args.runs, setup=tables_truncate),
        ),
    ]
    for label, rate in rows:
        print(f"  {label:<20} {rate:>10,.0f} records/s   {rate / floor:5.2f}x floor")
    sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    if sizes:
        print("peak RSS of parse + store (child process per size):")
        for records, mib in (peak_rss(env, n) for n in sizes):
            print(f"  {records:>10,} records   {mib:7.1f} MiB")


if __name__ == "__main__":
    main()
