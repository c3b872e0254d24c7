"""Matching benchmark: 100 webhooks × 4 conditions over 100,000 generated 133-field CDRs.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchmatch .venv/bin/python bench/match.py
    .venv/bin/python bench/match.py --records 20000      # SQLite in a scratch folder

Reports the median of `--runs` runs, all in this process:
(a) rule evaluations per second of the compiled matchers alone, over rows parsed beforehand
    (one evaluation = one webhook's four AND-ed conditions against one record), against a
    per-record loop calling each webhook's matcher in turn as the baseline;
(b) ingest + match (cdr_file_ingest with evaluate_webhooks=True) against ingest alone
    (evaluate_webhooks=False), each into emptied tables: how much matching adds.

No license is installed, so matched records still move the statistics and get their
delivery rows (without a body: it is rendered at the first send), but as `skipped`: nothing
is handed to the broker, which bench/deliver.py measures. Uses bench/ingest.py's database
set-up; the database named by DATABASE_URL is migrated and its cdr and webhook tables are
emptied — never point it at a database you care about.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ingest import database_prepare, django_setup, environment, generated_file, tables_truncate

WEBHOOKS = 100


def conditions(i: int) -> list[tuple[str, str, object]]:
    """Webhook `i`'s conditions: four shapes an operator would write, each firing on about
    0.5–4 % of the generated records, in no particular order of cost."""
    k = i // 4
    digit = str(1 + k % 7)
    shapes: list[list[tuple[str, str, object]]] = [
        [  # long calls from international callers to a phone
            ("callingPartyNumber", "regex", r"^\+(44|49|33)"),
            ("duration", "gt", 250 + 10 * k),
            ("origCause_value", "in", [0, 16]),
            ("destDeviceName", "startswith", "SEP"),
        ],
        [  # missed calls from a phone to a block of extensions
            ("dateTimeConnect", "eq", "Never"),
            ("destCause_value", "in", [0, 16, 17, 19]),
            ("origDeviceName", "contains", "SEP"),
            ("finalCalledPartyNumber", "regex", rf"^{digit}"),
        ],
        [  # short answered calls between phones
            ("duration", "lt", 10 + k),
            ("dateTimeConnect", "gt", 0),
            ("callingPartyNumber", "startswith", digit),
            ("destDeviceName", "regex", r"^SEP[0-9A-F]{12}$"),
        ],
        [  # trunk calls to a block of extensions, longer than a minute or so
            ("origDeviceName", "contains", "TRUNK"),
            ("finalCalledPartyNumber", "regex", rf"^{digit}\d{{3}}$"),
            ("duration", "gt", 30 + 4 * k),
            ("destCause_value", "in", [0, 16]),
        ],
    ]
    return shapes[i % len(shapes)]


def webhooks_create(count: int) -> None:
    from webhooks.matching import validate_condition
    from webhooks.models import Condition, Webhook

    Webhook.objects.all().delete()
    for i in range(count):
        webhook = Webhook.objects.create(
            name=f"bench-{i:03d}", url="http://127.0.0.1:9/hook", meta={"bench": i}
        )
        for order, (field, operator, value) in enumerate(conditions(i)):
            rule = validate_condition(field, operator, value)
            Condition.objects.create(
                webhook=webhook, field=rule.field, operator=operator, value=value, order=order
            )


def parsed_batches(path: Path, size: int) -> tuple[dict[str, int], list[list[list[str]]]]:
    from cdr.parsing import CucmReader, Row, open_binary

    batches: list[list[list[str]]] = [[]]
    with open_binary(path) as stream:
        reader = CucmReader(stream)
        for item in reader:
            assert isinstance(item, Row)
            if len(batches[-1]) == size:
                batches.append([])
            batches[-1].append(item.values)
    return reader.layout.index, batches


def evaluations_per_second(
    index: dict[str, int], batches: list[list[list[str]]], *, batched: bool
) -> float:
    """Every webhook against every record: as the trigger does it, batch by batch with
    match_batch, or (the baseline) calling each webhook's matcher on each record in turn."""
    from webhooks.matching import match_batch
    from webhooks.trigger import enabled_webhooks, webhooks_compile

    matchers = [hook.match for hook in webhooks_compile(enabled_webhooks(), index)]
    started = time.perf_counter()
    for batch in batches:
        if batched:
            match_batch(matchers, batch)
            continue
        for values in batch:
            for match in matchers:
                match(values)
    return len(matchers) * sum(map(len, batches)) / (time.perf_counter() - started)


def median_rate(step: Callable[[], float], runs: int) -> float:
    return statistics.median(step() for _ in range(runs))


def ingest(path: Path, records: int, *, evaluate: bool) -> float:
    from cdr.services import cdr_file_ingest
    from webhooks.models import Webhook

    tables_truncate()
    Webhook.objects.update(hit_count=0)
    started = time.perf_counter()
    record = cdr_file_ingest(path=path, source="bench", evaluate_webhooks=evaluate)
    elapsed = time.perf_counter() - started
    if record.status != "done" or record.stored_count != records:
        raise SystemExit(f"ingest did not succeed: {record.status} {record.error}")
    return records / elapsed


def deliveries_created() -> tuple[int, list[float]]:
    """Deliveries of the last ingest, and each webhook's share of the records (%)."""
    from webhooks.models import Delivery, Webhook

    total = Delivery.objects.count()
    return total, [w.hit_count for w in Webhook.objects.order_by("name")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--webhooks", type=int, default=WEBHOOKS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    env = environment()
    database_prepare(env)
    django_setup(env)
    from django.conf import settings
    from django.db import connection

    path = generated_file(args.records)
    webhooks_create(args.webhooks)
    print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
    print(
        f"file: {path.name}, {args.records:,} records, 133 fields; "
        f"{args.webhooks} webhooks × 4 conditions; median of {args.runs} runs"
    )
    index, batches = parsed_batches(path, settings.CDR_BATCH_SIZE)
    batched = median_rate(lambda: evaluations_per_second(index, batches, batched=True), args.runs)
    per_record = median_rate(
        lambda: evaluations_per_second(index, batches, batched=False), args.runs
    )
    alone: list[float] = []
    matched: list[float] = []
    for _ in range(args.runs):
        alone.append(ingest(path, args.records, evaluate=False))
        matched.append(ingest(path, args.records, evaluate=True))
    deliveries, hits = deliveries_created()
    ingest_alone, ingest_matched = statistics.median(alone), statistics.median(matched)
    shares = sorted(100 * h / args.records for h in hits)

    rows = [
        ("rule evaluations, match_batch", "evaluations/s", batched, per_record),
        ("ingest alone", "records/s", ingest_alone, ingest_alone),
        ("ingest + match", "records/s", ingest_matched, ingest_alone),
    ]
    header = f"  {'figure':<32} {'unit':<14} {'median':>12} {'baseline':>12} {'ratio':>7}"
    print(f"\n{header}\n  {'-' * (len(header) - 2)}")
    for label, unit, value, baseline in rows:
        ratio = value / baseline
        print(f"  {label:<32} {unit:<14} {value:>12,.0f} {baseline:>12,.0f} {ratio:>6.2f}x")
    print("  (baseline: rule evaluations — each matcher called per record; ingest — alone)")
    added = args.records / ingest_matched - args.records / ingest_alone
    evaluating = args.webhooks * args.records / batched
    print(
        f"\n  matching adds {100 * (ingest_alone / ingest_matched - 1):.1f} % to ingest time "
        f"(+{added:.1f} s; rule evaluation alone takes ≈ {evaluating:.1f} s, on the "
        "read-ahead thread beside the database work; the rest is storing the delivery rows "
        "and statistics)"
    )
    print(
        f"  deliveries created: {deliveries:,} ({deliveries / args.records:.2f} per record); "
        f"per webhook {shares[0]:.2f}–{shares[-1]:.2f} % of records "
        f"(median {statistics.median(shares):.2f} %)"
    )


if __name__ == "__main__":
    main()
