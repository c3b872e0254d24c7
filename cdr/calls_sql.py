"""The hand-written SQL of call assembly and settling (`cdr.calls`).

Set-based: one statement per batch of rows or calls, never one per record. Table and
column names come from the models' metadata; parameters are named. PostgreSQL takes lists
as arrays (`unnest`, `= ANY`); SQLite gets them spelled out as named placeholders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from cdr.facts import CallFacts, Leg, Quality
from cdr.models import Call, CallKey, Cdr, Cmr

# The first key of the advisory locks that make one cluster's assembly take turns (the
# second is the cluster's hash).
_ASSEMBLY_LOCK = 0x43414C4C  # "CALL"


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model: Any) -> str:
    return _q(model._meta.db_table)


def _col(model: Any, name: str) -> str:
    return _q(model._meta.get_field(name).column)


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _in(name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    """`IN (…)` for `values`, their parameters added to `params` under `name`."""
    if _postgres():
        params[name] = list(values)
        return f"= ANY(%({name})s)"
    names = [f"{name}_{i}" for i in range(len(values))]
    params.update(zip(names, values, strict=True))
    return "IN (" + ", ".join(f"%({n})s" for n in names) + ")"


def _epoch(column: str) -> str:
    if _postgres():
        return f"CAST(extract(epoch FROM {column}) AS bigint)"
    return f"CAST(strftime('%%s', {column}) AS INTEGER)"


def _time(value: str) -> str:
    return f"to_timestamp({value})" if _postgres() else f"datetime({value}, 'unixepoch')"


def _execute(statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


# --- assembly ------------------------------------------------------------------------------


def clusters_lock(clusters: Sequence[str]) -> None:
    """PostgreSQL: make assembly of these clusters' records take turns until the caller's
    transaction ends (two nodes' files of one cluster ingested at once would otherwise both
    start a call for the same conversation). SQLite runs one writer at a time."""
    if not _postgres():
        return
    for cluster in sorted(clusters):
        _execute(
            "SELECT pg_advisory_xact_lock(%(space)s, hashtext(%(cluster)s))",
            {"space": _ASSEMBLY_LOCK, "cluster": cluster},
        )


Key = tuple[str, int, int]  # (cluster, kind, number)

_KEY_CHUNK = 5000


def keys_find(keys: Iterable[Key]) -> dict[Key, tuple[int, int]]:
    """The call and last-seen time of each of `keys` that names a call."""
    wanted = sorted(keys)
    found: dict[Key, tuple[int, int]] = {}
    table = _table(CallKey)
    cluster, kind, number = (_col(CallKey, n) for n in ("cluster", "kind", "number"))
    call, seen = _col(CallKey, "call"), _col(CallKey, "seen")
    for start in range(0, len(wanted), _KEY_CHUNK):
        chunk = wanted[start : start + _KEY_CHUNK]
        params: dict[str, Any] = {}
        if _postgres():
            params = {
                "clusters": [k[0] for k in chunk],
                "kinds": [k[1] for k in chunk],
                "numbers": [k[2] for k in chunk],
            }
            statement = (
                f"SELECT k.{cluster}, k.{kind}, k.{number}, k.{call}, k.{seen} FROM {table} k "
                "JOIN unnest(%(clusters)s::text[], %(kinds)s::smallint[], %(numbers)s::bigint[])"
                f" AS b(cluster, kind, number) ON k.{cluster} = b.cluster AND k.{kind} = b.kind"
                f" AND k.{number} = b.number"
            )
        else:
            rows = []
            for i, (c, k, n) in enumerate(chunk):
                params.update({f"c{i}": c, f"k{i}": k, f"n{i}": n})
                rows.append(f"(%(c{i})s, %(k{i})s, %(n{i})s)")
            statement = (
                f"SELECT {cluster}, {kind}, {number}, {call}, {seen} FROM {table} "
                f"WHERE ({cluster}, {kind}, {number}) IN (VALUES {', '.join(rows)})"
            )
        for c, k, n, call_id, when in _execute(statement, params):
            found[(c, k, n)] = (call_id, when)
    return found


def keys_upsert(keys: dict[Key, tuple[int, int]]) -> None:
    """Point each key at its call (with the time it was last seen)."""
    table = _table(CallKey)
    names = [_col(CallKey, n) for n in ("cluster", "kind", "number", "call", "seen")]
    cluster, kind, number, call, seen = names
    update = (
        f"ON CONFLICT ({cluster}, {kind}, {number}) DO UPDATE SET {call} = excluded.{call}, "
        f"{seen} = excluded.{seen}"
    )
    items = sorted(keys.items())
    for start in range(0, len(items), _KEY_CHUNK):
        chunk = items[start : start + _KEY_CHUNK]
        if _postgres():
            params: dict[str, Any] = {
                "clusters": [k[0] for k, _ in chunk],
                "kinds": [k[1] for k, _ in chunk],
                "numbers": [k[2] for k, _ in chunk],
                "calls": [v[0] for _, v in chunk],
                "seen": [v[1] for _, v in chunk],
            }
            source = (
                "SELECT * FROM unnest(%(clusters)s::text[], %(kinds)s::smallint[], "
                "%(numbers)s::bigint[], %(calls)s::bigint[], %(seen)s::bigint[])"
            )
        else:
            params, rows = {}, []
            for i, ((c, k, n), (call_id, when)) in enumerate(chunk):
                params.update({f"c{i}": c, f"k{i}": k, f"n{i}": n, f"a{i}": call_id, f"s{i}": when})
                rows.append(f"(%(c{i})s, %(k{i})s, %(n{i})s, %(a{i})s, %(s{i})s)")
            # SQLite needs the WHERE to tell the SELECT's end from the ON CONFLICT clause.
            source = f"SELECT * FROM (VALUES {', '.join(rows)}) WHERE true"
        _execute(f"INSERT INTO {table} ({', '.join(names)}) {source} {update}", params)


def calls_create(rows: Sequence[tuple[str, int, int]], now: datetime) -> list[int]:
    """New calls for (cluster, callManagerId, callId) rows, in order; their ids."""
    table = _table(Call)
    pk = _col(Call, "id")
    names = [
        pk,
        *(
            _col(Call, n)
            for n in (
                "cluster",
                "call_manager_id",
                "call_id",
                "first_arrival_at",
                "last_arrival_at",
            )
        ),
    ]
    params: dict[str, Any] = {"now": now, "n": len(rows)}
    if _postgres():
        # Ids drawn first, so that they pair with the rows whatever order INSERT takes.
        sequence = _execute(
            "SELECT pg_get_serial_sequence(%(table)s, %(column)s)",
            {"table": Call._meta.db_table, "column": Call._meta.pk.column},
        )[0][0]
        params["sequence"] = sequence
        ids = [
            row[0]
            for row in _execute(
                "SELECT nextval(%(sequence)s::regclass) FROM generate_series(1, %(n)s)", params
            )
        ]
        params.update(
            ids=ids,
            clusters=[r[0] for r in rows],
            cms=[r[1] or None for r in rows],
            calls=[r[2] or None for r in rows],
        )
        source = (
            "SELECT v.*, %(now)s, %(now)s FROM unnest(%(ids)s::bigint[], %(clusters)s::text[], "
            "%(cms)s::integer[], %(calls)s::bigint[]) AS v"
        )
    else:
        # SQLite: the transaction holds the write lock from its start (IMMEDIATE).
        last = _execute(f"SELECT COALESCE(max({pk}), 0) FROM {table}", {})[0][0]
        ids = list(range(last + 1, last + 1 + len(rows)))
        values = []
        for i, (call_id, (cluster, cm, number)) in enumerate(zip(ids, rows, strict=True)):
            params.update(
                {f"i{i}": call_id, f"c{i}": cluster, f"m{i}": cm or None, f"n{i}": number or None}
            )
            values.append(f"(%(i{i})s, %(c{i})s, %(m{i})s, %(n{i})s, %(now)s, %(now)s)")
        source = f"VALUES {', '.join(values)}"
    _execute(f"INSERT INTO {table} ({', '.join(names)}) {source}", params)
    return ids


def calls_merge(pairs: Sequence[tuple[int, int]]) -> None:
    """Merge each (call, into) pair: its records and keys move to `into`, and it is marked
    merged (kept, so that what refers to it still resolves)."""
    for other, target in pairs:
        params = {"other": other, "target": target}
        for model in (Cdr, Cmr):
            column = _col(model, "call_ref")
            _execute(
                f"UPDATE {_table(model)} SET {column} = %(target)s WHERE {column} = %(other)s",
                params,
            )
        column = _col(CallKey, "call")
        _execute(
            f"UPDATE {_table(CallKey)} SET {column} = %(target)s WHERE {column} = %(other)s",
            params,
        )
        _execute(
            f"UPDATE {_table(Call)} SET {_col(Call, 'merged_into')} = %(target)s "
            f"WHERE {_col(Call, 'id')} = %(other)s",
            params,
        )


def calls_arrived(ids: Sequence[int], now: datetime) -> None:
    """New records joined these calls: they are open until nothing more arrives."""
    params: dict[str, Any] = {"now": now}
    where = _in("ids", ids, params)
    _execute(
        f"UPDATE {_table(Call)} SET {_col(Call, 'last_arrival_at')} = %(now)s, "
        f"{_col(Call, 'settled_at')} = NULL, {_col(Call, 'held_until')} = NULL "
        f"WHERE {_col(Call, 'id')} {where}",
        params,
    )


def calls_delete(ids: Sequence[int]) -> None:
    params: dict[str, Any] = {}
    where = _in("ids", ids, params)
    _execute(f"DELETE FROM {_table(CallKey)} WHERE {_col(CallKey, 'call')} {where}", params)
    _execute(f"DELETE FROM {_table(Call)} WHERE {_col(Call, 'id')} {where}", params)


# --- settling ------------------------------------------------------------------------------


def _open() -> str:
    return f"{_col(Call, 'settled_at')} IS NULL AND {_col(Call, 'merged_into')} IS NULL"


def _lock_clause() -> str:
    return " FOR UPDATE SKIP LOCKED" if _postgres() else ""


def calls_due(cutoff: datetime, now: datetime, limit: int) -> dict[int, bool]:
    """Open calls nothing has joined since `cutoff` and that are not held (locked until the
    transaction ends; other sweeps skip them): id → whether a hold on it ran out."""
    held = _col(Call, "held_until")
    rows = _execute(
        f"SELECT {_col(Call, 'id')}, {held} IS NOT NULL FROM {_table(Call)} WHERE {_open()} "
        f"AND {_col(Call, 'last_arrival_at')} <= %(cutoff)s "
        f"AND ({held} IS NULL OR {held} <= %(now)s) "
        f"ORDER BY {_col(Call, 'last_arrival_at')} LIMIT %(limit)s{_lock_clause()}",
        {"cutoff": cutoff, "now": now, "limit": limit},
    )
    return {call_id: bool(expired) for call_id, expired in rows}


def calls_lock(ids: Sequence[int], cutoff: datetime | None, now: datetime) -> dict[int, bool]:
    """Those of `ids` that are open (and due, with a `cutoff`), locked as by `calls_due`."""
    held = _col(Call, "held_until")
    params: dict[str, Any] = {"now": now}
    where = f"{_col(Call, 'id')} {_in('ids', ids, params)} AND {_open()}"
    if cutoff is not None:
        params["cutoff"] = cutoff
        where += (
            f" AND {_col(Call, 'last_arrival_at')} <= %(cutoff)s"
            f" AND ({held} IS NULL OR {held} <= %(now)s)"
        )
    rows = _execute(
        f"SELECT {_col(Call, 'id')}, {held} IS NOT NULL FROM {_table(Call)} WHERE {where} "
        f"ORDER BY {_col(Call, 'id')}{_lock_clause()}",
        params,
    )
    return {call_id: bool(expired) for call_id, expired in rows}


_LEG_COLUMNS = (
    "id",
    "origination_at",
    "connect_at",
    "disconnect_at",
    "calling_party_number",
    "original_called_party_number",
    "final_called_party_number",
    "orig_cause_value",
    "dest_cause_value",
    "orig_termination_on_behalf_of",
    "dest_termination_on_behalf_of",
    "join_on_behalf_of",
    "orig_redirect_reason",
    "last_redirect_reason",
    "orig_redirect_on_behalf_of",
    "last_redirect_on_behalf_of",
)
_TIMES = {"origination_at", "connect_at", "disconnect_at"}


def legs_of(call_ids: Sequence[int]) -> dict[int, list[Leg]]:
    """The legs of each call, as `cdr.facts` reads them."""
    params: dict[str, Any] = {}
    columns = [
        _epoch(_col(Cdr, name)) if name in _TIMES else _col(Cdr, name) for name in _LEG_COLUMNS
    ]
    call = _col(Cdr, "call_ref")
    rows = _execute(
        f"SELECT {call}, {', '.join(columns)} FROM {_table(Cdr)} "
        f"WHERE {call} {_in('calls', call_ids, params)}",
        params,
    )
    legs: dict[int, list[Leg]] = {}
    for call_id, *values in rows:
        legs.setdefault(call_id, []).append(Leg(*values))
    return legs


def quality_of(call_ids: Sequence[int]) -> dict[int, list[Quality]]:
    params: dict[str, Any] = {}
    names = ("mos", "jitter", "packets_lost", "packets_received")
    call = _col(Cmr, "call_ref")
    rows = _execute(
        f"SELECT {call}, {', '.join(_col(Cmr, n) for n in names)} FROM {_table(Cmr)} "
        f"WHERE {call} {_in('calls', call_ids, params)}",
        params,
    )
    quality: dict[int, list[Quality]] = {}
    for call_id, *values in rows:
        quality.setdefault(call_id, []).append(Quality(*values))
    return quality


def calls_hold(ids: Sequence[int], until: datetime) -> None:
    params: dict[str, Any] = {"until": until}
    _execute(
        f"UPDATE {_table(Call)} SET {_col(Call, 'held_until')} = %(until)s "
        f"WHERE {_col(Call, 'id')} {_in('ids', ids, params)}",
        params,
    )


# Facts stored per call: (CallFacts attribute, Call field, PostgreSQL array type, is a time).
_FACTS = (
    ("started", "started_at", "bigint", True),
    ("ended", "ended_at", "bigint", True),
    ("legs", "legs", "integer", False),
    ("cmr_count", "cmr_count", "integer", False),
    ("answered", "answered", "boolean", False),
    ("missed", "missed", "boolean", False),
    ("voicemail", "voicemail", "boolean", False),
    ("transferred", "transferred", "boolean", False),
    ("forwarded", "forwarded", "boolean", False),
    ("conference", "conference", "boolean", False),
    ("duration", "duration", "integer", False),
    ("ring_seconds", "ring_seconds", "integer", False),
    ("caller", "caller", "text", False),
    ("dialed", "dialed", "text", False),
    ("answered_by", "answered_by", "text", False),
    ("cause", "cause", "bigint", False),
    ("mos_min", "mos_min", "double precision", False),
    ("jitter_max", "jitter_max", "integer", False),
    ("loss_pct", "loss_pct", "double precision", False),
)


def calls_facts_store(rows: Sequence[tuple[int, CallFacts | None]], now: datetime) -> None:
    """Store each call's facts (None: settled without any) and mark it settled."""
    table, pk = _table(Call), _col(Call, "id")
    state = (
        f"{_col(Call, 'settled_at')} = %(now)s, {_col(Call, 'held_until')} = NULL, "
        f"{_col(Call, 'settle_count')} = {_col(Call, 'settle_count')} + 1"
    )
    bare = [call_id for call_id, facts in rows if facts is None]
    if bare:
        params: dict[str, Any] = {"now": now}
        _execute(f"UPDATE {table} SET {state} WHERE {pk} {_in('bare', bare, params)}", params)
    full = [(call_id, facts) for call_id, facts in rows if facts is not None]
    if not full:
        return
    params = {"now": now}
    if _postgres():
        params["ids"] = [call_id for call_id, _ in full]
        arrays = ["%(ids)s::bigint[]"]
        for i, (attr, _, kind, _) in enumerate(_FACTS):
            params[f"f{i}"] = [getattr(facts, attr) for _, facts in full]
            arrays.append(f"%(f{i})s::{kind}[]")
        aliases = ", ".join(["id", *(f"f{i}" for i in range(len(_FACTS)))])
        source = f"unnest({', '.join(arrays)}) AS v({aliases})"
        key = "v.id"
        value = [f"v.f{i}" for i in range(len(_FACTS))]
    else:
        values = []
        for j, (call_id, facts) in enumerate(full):
            names = [f"r{j}_id"]
            params[f"r{j}_id"] = call_id
            for i, (attr, *_rest) in enumerate(_FACTS):
                params[f"r{j}_{i}"] = getattr(facts, attr)
                names.append(f"r{j}_{i}")
            values.append("(" + ", ".join(f"%({n})s" for n in names) + ")")
        source = f"(VALUES {', '.join(values)}) AS v"
        key = "v.column1"
        value = [f"v.column{i + 2}" for i in range(len(_FACTS))]
    sets = ", ".join(
        f"{_col(Call, name)} = {_time(v) if is_time else v}"
        for (_, name, _, is_time), v in zip(_FACTS, value, strict=True)
    )
    _execute(f"UPDATE {table} SET {state}, {sets} FROM {source} WHERE {table}.{pk} = {key}", params)
