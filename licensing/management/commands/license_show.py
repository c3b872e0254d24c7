from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from licensing.display import license_text
from licensing.selectors import license_get


class Command(BaseCommand):
    help = "Show the installed license: state, customer, features, limits, expiry, appliance id."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(license_text(license_get()))
