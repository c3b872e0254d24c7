"""The webhook body: `{"cdr": {...}, "meta": {...}, "name": "<webhook name>"}`.

`cdr` holds every non-empty field under its CUCM header name, as text as in the file, except
the three call times (rendered `YYYY-MM-DDTHH:MM:SSZ` in UTC, 0 → "Never") and `duration`
(a JSON integer) — the shape of the product page's reference payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

TIME_FIELDS = frozenset({"dateTimeOrigination", "dateTimeConnect", "dateTimeDisconnect"})


def render_time(value: str) -> str:
    if value in ("", "0"):
        return "Never"
    return datetime.fromtimestamp(int(value), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cdr_renderer(names: Sequence[str]) -> Callable[[Sequence[str]], dict[str, Any]]:
    """A function from a row (values in `names` order) to the payload's `cdr` object."""
    special: dict[int, Callable[[str], Any]] = {}
    for i, name in enumerate(names):
        if name in TIME_FIELDS:
            special[i] = render_time
        elif name == "duration":
            special[i] = int
    pairs = tuple(enumerate(names))

    def render(values: Sequence[str]) -> dict[str, Any]:
        cdr: dict[str, Any] = {}
        for i, name in pairs:
            value = values[i]
            if value != "":
                convert = special.get(i)
                cdr[name] = convert(value) if convert else value
        return cdr

    return render


def payload_body(*, name: str, meta: dict[str, Any], cdr: dict[str, Any]) -> str:
    """The exact text that is POSTed and signed."""
    return json.dumps({"cdr": cdr, "meta": meta, "name": name}, ensure_ascii=False)


_renderers: dict[int, tuple[list[str], Callable[[Sequence[str]], dict[str, Any]]]] = {}


def record_cdr(layout_id: int, names: list[str], raw: str) -> dict[str, Any]:
    """The payload's `cdr` object for a stored record (its raw line and its layout). Layouts
    never change, so each one's renderer is built once per process."""
    from cdr.parsing import split_line

    cached = _renderers.get(layout_id)
    if cached is None:
        cached = _renderers[layout_id] = (names, cdr_renderer(names))
    return cached[1](split_line(raw))


def event_body(*, cdr_id: int | None, name: str, meta: dict[str, Any]) -> str | None:
    """An event delivery's body, rendered from its stored CDR when first sent (the trigger
    stores no body, so matching stays cheap); None when the record no longer exists."""
    from cdr.models import Cdr

    row = (
        Cdr.objects.filter(pk=cdr_id).values_list("layout_id", "layout__fields", "raw").first()
        if cdr_id is not None
        else None
    )
    if row is None:
        return None
    layout_id, names, raw = row
    return payload_body(name=name, meta=meta, cdr=record_cdr(layout_id, names, raw))
