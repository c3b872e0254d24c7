"""Filter pieces shared by the API's filter sets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters as filters
from django.db.models import QuerySet


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    """An ISO-8601 date-time filter that queries in UTC.

    Python accepts UTC offsets up to ±23:59, PostgreSQL only up to ±15:59: a valid but exotic
    offset must not turn into a database error.
    """

    def filter(self, qs: QuerySet, value: datetime | None) -> Any:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return super().filter(qs, value)
