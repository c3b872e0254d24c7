from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webhooks.encryption import SecretUnreadable, secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every webhook secret stored at rest with the current SECRET_KEY (after a "
        "key rotation; the previous key must be in SECRET_KEY_FALLBACKS until this has run)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rows = secrets_reencrypt()
        except SecretUnreadable as exc:
            raise CommandError(f"{exc}. Nothing was changed.") from exc
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the secrets of {rows} rows."))
