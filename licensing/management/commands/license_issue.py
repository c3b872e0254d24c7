from __future__ import annotations

import uuid
from argparse import ArgumentParser
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from licensing.verification import (
    KNOWN_FEATURES,
    KNOWN_LIMITS,
    issue,
    load_private_key_pem,
)

DEFAULT_GRACE_DAYS = 14


def parse_expires(value: str) -> datetime | None:
    """'never', a date (valid through that whole UTC day) or an ISO-8601 date-time."""
    if value.lower() == "never":
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(23, 59, 59), tzinfo=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(
            f"--expires {value!r}: use YYYY-MM-DD, an ISO-8601 date-time, or never"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_features(values: list[str]) -> set[str]:
    features = {f.strip() for value in values for f in value.split(",") if f.strip()}
    # A typo here would ship a license that silently grants nothing.
    unknown = features - KNOWN_FEATURES
    if unknown:
        raise CommandError(
            f"--features: unknown {', '.join(sorted(unknown))}; "
            f"known features: {', '.join(sorted(KNOWN_FEATURES))}"
        )
    return features


def parse_limits(values: list[str]) -> dict[str, int]:
    limits = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not number.isdigit():
            raise CommandError(f"--limit {value!r}: use NAME=N, e.g. webhooks=50")
        if name not in KNOWN_LIMITS:
            raise CommandError(
                f"--limit {name!r} is unknown; known limits: {', '.join(sorted(KNOWN_LIMITS))}"
            )
        limits[name] = int(number)
    return limits


class Command(BaseCommand):
    help = "Vendor tool: sign a license with a private key and print the license line."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--private-key", required=True, help="PEM file from license_keygen")
        parser.add_argument("--kid", required=True, help="id of the signing key")
        parser.add_argument("--customer", required=True)
        parser.add_argument("--expires", required=True, help="YYYY-MM-DD, date-time or never")
        parser.add_argument(
            "--features", required=True, nargs="+", help="e.g. cdr_webhooks (comma or space)"
        )
        parser.add_argument(
            "--limit", action="append", default=[], help="NAME=N, e.g. webhooks=50; repeatable"
        )
        parser.add_argument("--appliance-id", help="bind the license to one appliance")
        parser.add_argument("--grace-days", type=int, default=DEFAULT_GRACE_DAYS)
        parser.add_argument("--license-id", help="default: LIC-<random uuid>")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["private_key"])
        try:
            private_key = load_private_key_pem(path.read_bytes())
        except OSError as exc:
            raise CommandError(f"Cannot read --private-key {path}: {exc}") from exc
        except ValueError as exc:
            raise CommandError(f"--private-key {path} {exc}") from exc
        expires_at = parse_expires(options["expires"])
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            raise CommandError(f"--expires {options['expires']} is in the past")
        if options["grace_days"] < 0:
            raise CommandError("--grace-days must be 0 or more")
        if not options["customer"].strip():
            raise CommandError("--customer must not be empty")
        appliance_id = options["appliance_id"]
        if appliance_id is not None:
            try:
                appliance_id = str(uuid.UUID(appliance_id))
            except ValueError as exc:
                raise CommandError(f"--appliance-id {appliance_id!r} is not a UUID") from exc
        self.stdout.write(
            issue(
                private_key,
                kid=options["kid"],
                customer=options["customer"].strip(),
                expires_at=expires_at,
                features=parse_features(options["features"]),
                limits=parse_limits(options["limit"]),
                grace_days=options["grace_days"],
                appliance_id=appliance_id,
                license_id=options["license_id"],
                issued_at=now,
            )
        )
