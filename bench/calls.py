"""Call assembly benchmark: ingest with and without it, and settling a million open calls.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchcalls .venv/bin/python bench/calls.py
    .venv/bin/python bench/calls.py --records 50000 --settle 100000     # SQLite, scratch folder

(1) Ingest of a generated 133-field CDR file (the default call mix: transfers, conferences,
forwards…) into empty tables, `--runs` times each way, alternating: without call assembly
(the baseline, `assemble_calls=False`) and with it; medians, and the share assembly adds.
(2) `--settle` open calls (answered calls, their CDRs and CMRs ingested with assembly, not
timed), then one `calls_settle` over all of them, timed: facts computed and stored, no
listener. Uses bench/ingest.py's database handling: never point it at a database you care
about.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from pathlib import Path

from ingest import (
    SCRATCH,
    database_prepare,
    django_setup,
    environment,
    generated_file,
    tables_truncate,
)


def ingest(path: Path, *, assemble: bool) -> tuple[int, float]:
    from cdr.services import cdr_file_ingest

    started = time.perf_counter()
    record = cdr_file_ingest(
        path=path, source="bench", evaluate_webhooks=False, assemble_calls=assemble
    )
    elapsed = time.perf_counter() - started
    if record.status != "done" or record.rejected_count:
        raise SystemExit(f"ingest did not succeed: {record.status} {record.error}")
    return record.stored_count, elapsed


def settle_files(calls: int) -> list[Path]:
    """CDR and CMR files of `calls` answered calls, generated once and kept."""
    from cdr.generator import generate

    folder = SCRATCH / f"calls-answered-{calls}"
    done = folder / "DONE"
    if done.exists():
        return [Path(p) for p in done.read_text().split("\n")]
    paths = generate(
        folder,
        records=calls,
        generation=133,
        seed=2,
        cmr=True,
        mix={"answered": 1},
        records_per_file=100_000,
    )
    done.write_text("\n".join(map(str, paths)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=int, default=1_000_000, help="open calls to settle")
    args = parser.parse_args()

    env = environment()
    database_prepare(env)
    django_setup(env)
    from django.db import connection
    from django.utils import timezone

    from cdr.calls import calls_settle
    from cdr.models import Call

    print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
    path = generated_file(args.records)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for assemble in (False, True):
            tables_truncate()
            stored, elapsed = ingest(path, assemble=assemble)
            assert stored == args.records
            times[assemble].append(elapsed)
    without, with_calls = (statistics.median(times[flag]) for flag in (False, True))
    calls = Call.objects.filter(merged_into__isnull=True).count()
    print(f"ingest of {args.records:,} CDRs, median of {args.runs} runs (alternating):")
    print(f"  without call assembly   {without:7.2f} s   {args.records / without:>9,.0f} records/s")
    print(
        f"  with call assembly      {with_calls:7.2f} s   {args.records / with_calls:>9,.0f} "
        f"records/s   {calls:,} calls"
    )
    print(f"  assembly adds           {100 * (with_calls / without - 1):6.1f} %  (target < 20 %)")

    if args.settle:
        tables_truncate()
        paths = settle_files(args.settle)
        started = time.perf_counter()
        for file in sorted(paths, key=lambda p: p.name):
            ingest(file, assemble=True)
        loaded = time.perf_counter() - started
        open_calls = Call.objects.filter(settled_at__isnull=True).count()
        print(f"settle: {open_calls:,} open calls (their CDRs and CMRs ingested in {loaded:.0f} s)")
        started = time.perf_counter()
        settled = calls_settle(now=timezone.now() + timedelta(days=1), notify=False)
        elapsed = time.perf_counter() - started
        print(
            f"  calls_settle            {elapsed:7.2f} s   {len(settled) / elapsed:>9,.0f} calls/s"
            "   (target: 1,000,000 in < 30 s)"
        )


if __name__ == "__main__":
    main()
