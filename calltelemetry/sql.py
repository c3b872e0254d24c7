"""The project shell's hand-written SQL (each app keeps its own in its `sql` module)."""

from __future__ import annotations

from django.db import connection


def database_round_trip() -> None:
    """One statement to the database and back: it is reachable and answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
