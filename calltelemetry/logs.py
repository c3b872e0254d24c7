"""One JSON object per log line, for log shippers (LOG_FORMAT=json).

Only the known context fields passed with `extra=` are copied, so a record never leaks
whatever else a library attached to it, and every line has the same shape.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FIELDS = (
    "file",
    "cluster",
    "pkid",
    "webhook",
    "delivery",
    "event_id",
    "status",
    "attempt",
    "status_code",
    "latency_ms",
    "error_class",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
