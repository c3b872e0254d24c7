"""`manage.py generate_cdr OUT_DIR --records N …`: write realistic CUCM CDR/CMR files."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdr.generator import CMR_GENERATION, SCENARIOS, Call, iter_calls, write_calls


def parse_mix(text: str) -> dict[str, float]:
    """`answered=60,missed=15` → {"answered": 60.0, "missed": 15.0}."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in SCENARIOS:
            raise CommandError(
                f"bad --mix entry {part!r}: use scenario=weight with a scenario among "
                f"{', '.join(SCENARIOS)}"
            )
        try:
            mix[name] = float(weight)
        except ValueError:
            raise CommandError(f"bad --mix weight {weight!r} for {name}") from None
    return mix


class Command(BaseCommand):
    help = "Write realistic CUCM CDR (and CMR) flat files for tests and benchmarks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--records", type=int, required=True, help="CDR rows to write")
        parser.add_argument("--generation", type=int, default=133, help="118, 129 or 133")
        parser.add_argument("--mix", help="e.g. answered=60,missed=15,busy=5 (weights)")
        parser.add_argument("--cmr", action="store_true", help="also write the CMR files")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--cluster", default="StandAloneCluster")
        parser.add_argument("--node", type=int, default=1)
        parser.add_argument("--gzip", action="store_true")
        parser.add_argument("--records-per-file", type=int)

    def handle(self, *args: object, **options: Any) -> None:
        records: int = options["records"]
        generation: int = options["generation"]
        if records < 0:
            raise CommandError(f"--records must be >= 0, not {records}")
        if generation not in CMR_GENERATION:
            raise CommandError(f"--generation must be 118, 129 or 133, not {generation}")
        mix = parse_mix(options["mix"]) if options["mix"] is not None else None
        counts: Counter[str] = Counter()

        def counted(calls: Iterator[Call]) -> Iterator[Call]:
            for call in calls:
                counts[call.scenario] += 1
                yield call

        began = time.perf_counter()
        try:
            calls = iter_calls(
                records=records,
                mix=mix,
                seed=options["seed"],
                cluster=options["cluster"],
                node=options["node"],
                cmr=options["cmr"],
            )
            files = write_calls(
                options["out_dir"],
                counted(calls),
                generation=generation,
                cmr=options["cmr"],
                cluster=options["cluster"],
                node=options["node"],
                gzip=options["gzip"],
                records_per_file=options["records_per_file"],
            )
        except ValueError as error:  # the generator's argument checks
            raise CommandError(str(error)) from error
        elapsed = time.perf_counter() - began
        for path in files:
            self.stdout.write(str(path))
        for scenario in SCENARIOS:
            self.stdout.write(f"{scenario}: {counts[scenario]} calls")
        rate = records / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            f"{records} CDR records in {len(files)} files, {elapsed:.2f} s ({rate:,.0f} records/s)"
        )
