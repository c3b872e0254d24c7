"""Log formats: plain text (LOG_FORMAT=plain), or one JSON object per line for log
shippers (LOG_FORMAT=json).

Either way one record is one line: values in a message come from data (webhook names, file
names, a receiver's error text), and a line break in one would start a line that looks like
a record of its own. JSON escapes them by itself; the plain format escapes them.

In JSON, only the known context fields passed with `extra=` are copied, so a record never
leaks whatever else a library attached to it, and every line has the same shape.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Control characters, as terminals see them, and every line break str.splitlines() knows.
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if code != 0x09},
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class PlainFormatter(logging.Formatter):
    """`time level logger message` on one line: the message's control characters escaped
    (a traceback still follows on its own lines: it comes from the code, not from data)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


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
