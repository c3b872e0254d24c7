from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from licensing.display import license_text
from licensing.services import license_install
from licensing.verification import LicenseError


class Command(BaseCommand):
    help = "Install a license from FILE, or from standard input with '-'."
    # Lets tests hand call_command a stream, as createsuperuser does.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE", help="license file, or - for stdin")

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["file"]
        if source == "-":
            text = (options.get("stdin") or sys.stdin).read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read license file {source}: {exc}") from exc
        try:
            info = license_install(text=text)
        except LicenseError as exc:
            raise CommandError(
                f"License refused ({exc.code}): {exc.reason}. The installed license is unchanged."
            ) from exc
        self.stdout.write(self.style.SUCCESS("License installed."))
        self.stdout.write(license_text(info))
