"""`manage.py watch_cdr`: hand every complete file in the drop folder to the ingest workers."""

from __future__ import annotations

import signal
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from calltelemetry.health import watcher_heartbeat
from calltelemetry.sql import database_round_trip
from cdr.dropfolder import Folders, Scanner, file_claim, files_requeue_stale

SWEEP_EVERY = 10.0


class Command(BaseCommand):
    help = "Watch CDR_INCOMING_DIR and queue each complete CDR/CMR file for ingest."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--once", action="store_true", help="claim what is complete now, then exit"
        )

    def handle(self, *args: Any, once: bool = False, **options: Any) -> None:
        folders = Folders.current()
        scanner = Scanner(folders)
        self.stdout.write(f"Watching {folders.incoming}")
        running = True

        def stop(signum: int, frame: object) -> None:
            nonlocal running
            running = False

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        next_sweep = 0.0
        while running:
            try:
                for path in scanner.complete(require_stable=not once):
                    cdr_file = file_claim(path)
                    if cdr_file is not None:
                        self.stdout.write(f"queued {path.name} (ingest record {cdr_file.pk})")
                if time.monotonic() >= next_sweep:
                    files_requeue_stale()
                    next_sweep = time.monotonic() + SWEEP_EVERY
                # An idle folder needs no query, yet the heartbeat must vouch for the
                # database too: a watcher cut off from it claims nothing.
                database_round_trip()
                watcher_heartbeat()
            except Exception as exc:  # a database or disk hiccup must not stop the watcher
                self.stderr.write(f"watch_cdr: {exc}; retrying")
            if once:
                break
            time.sleep(settings.CDR_WATCH_INTERVAL)
            # Outside a request nothing else drops a connection the server has closed (a
            # restart, a failover, CONN_MAX_AGE): without this every later round would fail
            # on the dead connection for ever.
            close_old_connections()
