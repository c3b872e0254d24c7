"""`manage.py replay_cdr PATH...`: ingest CUCM files or folders of them, in this process."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from cdr.calls import calls_settle
from cdr.dropfolder import is_candidate
from cdr.models import CdrFile
from cdr.services import cdr_file_ingest, file_dry_run

NAMES = ("cdr", "cmr")


def expand(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # In a folder, only what is named like a CUCM file (cdr_…, cmr_…).
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and is_candidate(p.name) and p.name.lower().startswith(NAMES)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"{raw}: no such file or directory")
    return files


class Command(BaseCommand):
    help = "Ingest CUCM CDR/CMR files (or folders of them) and evaluate webhooks."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="store and send nothing; print which webhooks would fire for how many records",
        )
        parser.add_argument(
            "--no-webhooks", action="store_true", help="store records without evaluating webhooks"
        )

    def handle(
        self, *args: Any, paths: list[str], dry_run: bool, no_webhooks: bool, **o: Any
    ) -> None:
        files = expand(paths)
        if dry_run:
            failed = self.dry_run(files)
        else:
            failed = self.replay(files, evaluate_webhooks=not no_webhooks)
        if failed:
            sys.exit(1)

    def replay(self, files: list[Path], *, evaluate_webhooks: bool) -> int:
        started = time.monotonic()
        totals = {"stored": 0, "duplicate": 0, "rejected": 0}
        statuses: dict[str, int] = {}
        touched: set[int] = set()
        interactive = sys.stdout.isatty()
        with tqdm(total=None, unit=" records", disable=not interactive, file=sys.stdout) as bar:
            # With a bar on screen, lines go above it; otherwise straight to stdout.
            emit = bar.write if interactive else self.stdout.write
            for path in files:
                bar.set_description(path.name)
                try:
                    cdr_file = cdr_file_ingest(
                        path=path,
                        source="replay",
                        evaluate_webhooks=evaluate_webhooks,
                        progress=bar.update,
                        calls_touched=touched,
                    )
                except OSError as exc:
                    statuses["failed"] = statuses.get("failed", 0) + 1
                    emit(f"{path}: failed: {exc}")
                    continue
                statuses[cdr_file.status] = statuses.get(cdr_file.status, 0) + 1
                totals["stored"] += cdr_file.stored_count
                totals["duplicate"] += cdr_file.duplicate_count
                totals["rejected"] += cdr_file.rejected_count
                line = (
                    f"{path}: {cdr_file.status}, {cdr_file.stored_count} stored, "
                    f"{cdr_file.duplicate_count} duplicate, {cdr_file.rejected_count} rejected"
                )
                if cdr_file.error:
                    line += f" ({cdr_file.error})"
                emit(line)
                for error in cdr_file.errors[:10]:
                    emit(f"  line {error['line']}: {error['reason']}")
                if cdr_file.rejected_count > 10:
                    emit(f"  … {cdr_file.rejected_count - 10} more rejected rows")
        # The files hold the history: the calls they touched are complete now, not in
        # CALL_SETTLE_SECONDS, and their call-scope webhooks are evaluated here.
        settled = calls_settle(call_ids=sorted(touched), force=True, notify=evaluate_webhooks)
        elapsed = time.monotonic() - started
        by_status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none"
        self.stdout.write(
            f"Files: {len(files)} ({by_status}). Records: {totals['stored']} stored, "
            f"{totals['duplicate']} duplicate, {totals['rejected']} rejected, in {elapsed:.1f} s."
        )
        self.stdout.write(f"Calls: {len(settled)} settled.")
        return statuses.get(CdrFile.Status.FAILED, 0)

    def dry_run(self, files: list[Path]) -> int:
        failed = 0
        new = 0
        matches: dict[str, int] = {}
        for path in files:
            result = file_dry_run(path=path)
            if result.error:
                failed += 1
                self.stdout.write(f"{path}: would fail: {result.error}")
                if not result.records:  # else the rows before a cut would still be stored
                    continue
            new += result.new
            self.stdout.write(
                f"{path}: {result.kind.upper()}, {result.records} records, {result.new} new, "
                f"{result.rejected} rejected"
            )
            for name, count in result.matches.items():
                matches[name] = matches.get(name, 0) + count
        self.stdout.write(f"Dry run: nothing stored or sent. {new} new records would be stored.")
        if not matches:
            self.stdout.write("No webhook would fire.")
        for name, count in sorted(matches.items()):
            self.stdout.write(f"  {name}: would fire for {count} records")
        return failed
