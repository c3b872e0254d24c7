"""The webhook body: `{"cdr": {...}, "meta": {...}, "name": "<webhook name>"}`.

`cdr` holds every non-empty field under its CUCM header name, as text as in the file, except
the three call times (rendered `YYYY-MM-DDTHH:MM:SSZ` in UTC, 0 → "Never") and `duration`
(a JSON integer) — the shape of the product page's reference payload.

A call-scope webhook sends `{"call": {...}, "cdrs": [...], "cmrs": [...], "meta": {...},
"name": "..."}`: the call's facts, each leg exactly as a record webhook's `cdr` (origination
order) and each CMR's non-empty fields as text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from calltelemetry.caching import BoundedCache
from webhooks.call_matching import CALL_FIELDS, CALL_PREFIX

TIME_FIELDS = frozenset({"dateTimeOrigination", "dateTimeConnect", "dateTimeDisconnect"})


def render_time(value: str) -> str:
    """Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`; a value that is no time we can write (not a
    number, or outside years 1-9999) as it is, rather than fail the payload."""
    if value in ("", "0"):
        return "Never"
    try:
        return datetime.fromtimestamp(int(value), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return value


def render_integer(value: str) -> int | str:
    """A JSON integer, or the value as it is when it is not one."""
    try:
        return int(value)
    except ValueError:
        return value


def cdr_renderer(names: Sequence[str]) -> Callable[[Sequence[str]], dict[str, Any]]:
    """A function from a row (values in `names` order) to the payload's `cdr` object."""
    special: dict[int, Callable[[str], Any]] = {}
    for i, name in enumerate(names):
        if name in TIME_FIELDS:
            special[i] = render_time
        elif name == "duration":
            special[i] = render_integer
    pairs = tuple(enumerate(names))
    width = len(pairs)

    def render(values: Sequence[str]) -> dict[str, Any]:
        if len(values) < width:  # a short line: its missing fields are empty
            values = [*values, *[""] * (width - len(values))]
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


Renderer = Callable[[Sequence[str]], dict[str, Any]]
_renderers: BoundedCache[int, Renderer] = BoundedCache(max_entries=256)


def _renderer(layout_id: int) -> Renderer:
    """The renderer of a stored layout (whose fields never change once stored)."""
    from cdr.models import RecordLayout

    render = _renderers.get(layout_id)
    if render is None:
        names = RecordLayout.objects.values_list("fields", flat=True).get(pk=layout_id)
        render = _renderers.setdefault(layout_id, cdr_renderer(names))
    return render


@dataclass(frozen=True, slots=True)
class StoredCdr:
    """What sending needs of a stored record: its identity (for the log) and its line."""

    id: int
    cluster: str
    pkid: str
    layout_id: int
    raw: str

    def cdr(self) -> dict[str, Any]:
        from cdr.parsing import split_line

        return _renderer(self.layout_id)(split_line(self.raw))


def stored_cdrs(cdr_ids: Iterable[int]) -> dict[int, StoredCdr]:
    """The stored CDRs behind a batch of deliveries, by id, in one query (plus one for a layout
    this process has not rendered yet). Missing ids were deleted."""
    from cdr.models import RecordLayout
    from cdr.sql import cdrs_read

    ids = sorted(set(cdr_ids))
    if not ids:
        return {}
    found = {row[0]: StoredCdr(*row) for row in cdrs_read(ids)}
    layouts = {record.layout_id for record in found.values()}
    missing = [layout_id for layout_id in layouts if _renderers.get(layout_id) is None]
    for layout_id, names in RecordLayout.objects.filter(pk__in=missing).values_list("pk", "fields"):
        _renderers.set(layout_id, cdr_renderer(names))
    return found


def _utc(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The payload's `call` keys after its identity and times: each call field's camelCase name.
CALL_KEYS: tuple[tuple[str, str], ...] = tuple(
    (spec.name.removeprefix(CALL_PREFIX), spec.attr) for spec in CALL_FIELDS
)
# The Call columns a payload reads.
CALL_COLUMNS = (
    "id", "cluster", "call_manager_id", "call_id", "started_at", "ended_at",
    *(attr for _, attr in CALL_KEYS),
)  # fmt: skip


def call_object(call: dict[str, Any]) -> dict[str, Any]:
    """The payload's `call` object from a Call's `CALL_COLUMNS` values."""
    rendered: dict[str, Any] = {
        "cluster": call["cluster"],
        "callManagerId": call["call_manager_id"],
        "callId": call["call_id"],
        "started": _utc(call["started_at"]),
        "ended": _utc(call["ended_at"]),
    }
    for key, attr in CALL_KEYS:
        rendered[key] = call[attr]
    return rendered


def cmr_object(names: Sequence[str], values: Sequence[str]) -> dict[str, str]:
    """A CMR in the payload: its non-empty fields as text, under their header names."""
    return {name: value for name, value in zip(names, values, strict=False) if value != ""}


def call_payload_body(
    *,
    name: str,
    meta: dict[str, Any],
    call: dict[str, Any],
    cdrs: list[dict[str, Any]],
    cmrs: list[dict[str, str]],
) -> str:
    """The exact text a call-scope webhook POSTs and signs."""
    body = {"call": call, "cdrs": cdrs, "cmrs": cmrs, "meta": meta, "name": name}
    return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class StoredCall:
    """What sending needs of a stored call: its facts and its records' lines, in order."""

    id: int
    facts: dict[str, Any]
    legs: list[tuple[int, str]]  # (layout id, raw line), in origination order
    cmrs: list[tuple[int, str]]  # (layout id, raw line), in time order

    def objects(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
        """The payload's `call`, `cdrs` and `cmrs` (also a body template's variables)."""
        from cdr.models import RecordLayout
        from cdr.parsing import split_line

        cmr_layouts = dict(
            RecordLayout.objects.filter(pk__in={layout for layout, _ in self.cmrs}).values_list(
                "pk", "fields"
            )
        )
        return (
            call_object(self.facts),
            [_renderer(layout)(split_line(raw)) for layout, raw in self.legs],
            [cmr_object(cmr_layouts[layout], split_line(raw)) for layout, raw in self.cmrs],
        )


def stored_calls(call_ids: Iterable[int]) -> dict[int, StoredCall]:
    """The stored calls behind a batch of deliveries, by id: three queries (calls, legs,
    CMRs) whatever the batch. Missing ids were deleted."""
    from cdr.models import Call, Cdr, Cmr

    ids = sorted(set(call_ids))
    if not ids:
        return {}
    facts = {row["id"]: row for row in Call.objects.filter(pk__in=ids).values(*CALL_COLUMNS)}
    legs: dict[int, list[tuple[int, str]]] = {call_id: [] for call_id in facts}
    cmrs: dict[int, list[tuple[int, str]]] = {call_id: [] for call_id in facts}
    for model, found in ((Cdr, legs), (Cmr, cmrs)):
        order = ("origination_at", "id") if model is Cdr else ("stamp_at", "id")
        rows = model.objects.filter(call_ref_id__in=list(facts)).order_by(*order)
        for call_id, layout_id, raw in rows.values_list("call_ref_id", "layout_id", "raw"):
            found[call_id].append((layout_id, raw))
    return {
        call_id: StoredCall(call_id, row, legs[call_id], cmrs[call_id])
        for call_id, row in facts.items()
    }
