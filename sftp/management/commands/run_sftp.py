"""`manage.py run_sftp`: the SFTP receiver CUCM pushes CDR/CMR files to."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import asyncssh
from django.conf import settings
from django.core.management.base import BaseCommand

from sftp.server import Receiver


class Command(BaseCommand):
    help = (
        "Receive CDR/CMR files from CUCM over SFTP (logins are the CDR sources) into "
        "CDR_INCOMING_DIR."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.SFTP_HOST, help="default: SFTP_HOST")
        parser.add_argument(
            "--port", type=int, default=settings.SFTP_PORT, help="default: SFTP_PORT"
        )

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        # asyncssh logs ~15 lines per connection; our own lines say who sent what.
        asyncssh.set_log_level(logging.WARNING)
        receiver = Receiver.from_settings()
        removed = receiver.staging_clean()
        if removed:
            self.stdout.write(f"removed {removed} abandoned partial upload(s)")
        asyncio.run(self._serve(receiver, host, port))

    async def _serve(self, receiver: Receiver, host: str, port: int) -> None:
        server = await receiver.listen(host, port)
        for key in receiver.host_keys:
            self.stdout.write(f"host key {key.get_algorithm()} {key.get_fingerprint()}")
        self.stdout.write(
            f"SFTP receiver on {host}:{port}, delivering into {receiver.incoming} "
            f"(max {receiver.max_sessions} sessions, {receiver.max_file_bytes} bytes per file)"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        await server.wait_closed()
