"""The cdr app's hand-written SQL, and the only place in the app that runs any.

Everything else in `cdr/` uses the ORM or calls these functions. Table and column names come
from the models' metadata (`_meta.db_table`, `_meta.get_field(…).column`), quoted with
`connection.ops.quote_name` (both databases run these statements); parameters are named
(`%(name)s`) except in a VALUES list of N rows, which `BatchInsert.values` builds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils import timezone
from psycopg import sql

from cdr.contracts import StatementTail, StoredCte
from cdr.facts import CallFacts, Leg, Quality
from cdr.models import Call, CallKey, Cdr, Cmr

# The kinds of a typed column (the others are a text length): see `cdr.services.CDR_COLUMNS`.
INT, TIME = "int", "time"
# A CMR's MOS, read from its varVQMetrics text: MLQKmn, else MLQKav, else MLQK; a key that is
# missing, not a number or 0 (no score computed) gives NULL.
MOS = "mos"
MOS_KEYS = ("MLQKmn", "MLQKav", "MLQK")
# Staged per row before the typed columns: the line number (which also identifies the row
# in RETURNING), the raw line, cluster and pkid. They are the model's field names too.
STAGED = ("line", "raw", "cluster", "pkid")


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


class BatchInsert:
    """The statements that store one layout's batches: built once per layout and file.

    PostgreSQL: COPY into a temporary staging table, then INSERT … SELECT … ON CONFLICT DO
    NOTHING RETURNING (COPY is streamed by psycopg's C code; a 25,000-parameter INSERT would be
    rebuilt in Python for every batch). SQLite: one multi-row INSERT with the same clause.
    Ingest's parameters are `ingest_file`, `ingest_layout`, `ingest_cluster`
    (`cdr.contracts.INGEST_PARAMS`).
    """

    def __init__(
        self,
        model: type[Model],
        columns: Sequence[tuple[str, str | int]],
        *,
        postgres: bool,
        calls: bool = False,
    ):
        self.model = model
        self.columns = list(columns)
        self.postgres = postgres
        # With `calls`, each record is stored with its call (`call_ref`): on PostgreSQL from
        # the arrays `ingest_call_lines` / `ingest_call_refs`, on SQLite as each row's last
        # value; and RETURNING (and `run_with`'s row) also gives the calls of new records.
        self.calls = calls
        q = connection.ops.quote_name
        self.table = table(model)
        # Staging columns carry the field names; the target's are the model's columns.
        self.names = [*STAGED, *(col for col, _ in self.columns)]
        fields = ["file", "layout", *self.names, "ingested_at", *(["call_ref"] if calls else [])]
        self.target = ", ".join(column(model, name) for name in fields)
        self.on_conflict = (
            f" ON CONFLICT ({column(model, 'cluster')}, {column(model, 'pkid')}) DO NOTHING"
        )
        # The columns of `StoredCte`, which a listener's statement tail reads, by its names.
        self.returning = (
            self.on_conflict
            + " RETURNING "
            + ", ".join(f"{column(model, name)} AS {q(name)}" for name in StoredCte.COLUMNS)
            + (f", {column(model, 'call_ref')} AS {q('call_ref')}" if calls else "")
        )
        self._staging_ready = False  # the session's staging table exists

    def rolled_back(self) -> None:
        """The batch's transaction rolled back, and with it perhaps the staging table."""
        self._staging_ready = False

    def run(self, data: Any, params: dict[str, Any], *, returning: bool) -> Any:
        """Store the batch (COPY text on PostgreSQL, parameter tuples elsewhere); the
        (id, line[, call]) of the new records, or only their count without `returning`."""
        with connection.cursor() as cursor:
            if self.postgres:
                insert = self._staged_insert(cursor, data)
                cursor.execute(insert + (self.returning if returning else self.on_conflict), params)
            else:
                self._values(cursor, data, params, returning)
            return cursor.fetchall() if returning else cursor.rowcount

    def run_with(self, data: bytes, params: dict[str, Any], tail: StatementTail) -> tuple[Any, ...]:
        """PostgreSQL: store the batch and run `tail` in the same statement; its one row
        (the count of new records, with `calls` the array of their calls, then the tail's
        columns)."""
        with connection.cursor() as cursor:
            insert = sql.SQL(self._staged_insert(cursor, data) + self.returning)
            calls = sql.SQL(
                ", (SELECT array_agg(DISTINCT {}) FROM {})" if self.calls else ""
            ).format(sql.Identifier("call_ref"), StoredCte.name)
            statement = sql.SQL("WITH {} AS ({}){} SELECT (SELECT count(*) FROM {}){}{}").format(
                StoredCte.name, insert, tail.ctes, StoredCte.name, calls, tail.select
            )
            cursor.execute(statement.as_string(cursor.cursor), {**params, **tail.params})
            return tuple(cursor.fetchone())

    def _converted(self, cell: Callable[[str], str], default_cluster: str) -> list[str]:
        """The SQL expression of every staged column, `cell(name)` being its raw text and
        `default_cluster` the placeholder of the file name's cluster."""
        cluster = cell("cluster")
        exprs = [
            cell("line"),
            cell("raw"),
            f"substr(COALESCE(NULLIF({cluster}, ''), {default_cluster}), 1, 64)",
            cell("pkid"),
        ]
        for col, kind in self.columns:
            value = cell(col)
            if kind == INT:
                # A value too big for the column stays in the raw line only: a typed column
                # is a search aid, and one odd value must not fail its whole batch.
                bits = self.model._meta.get_field(col).get_internal_type()
                limit = 2**31 if bits == "IntegerField" else 2**63
                number = f"CAST({value} AS bigint)"
                exprs.append(
                    f"CASE WHEN length({value}) BETWEEN 1 AND 18 THEN CASE WHEN {number} "
                    f"BETWEEN {-limit} AND {limit - 1} THEN {number} END END"
                )
            elif kind == MOS:
                exprs.append(self._mos(value))
            elif kind == TIME:
                epoch = f"NULLIF(NULLIF({value}, ''), '0')"
                exprs.append(
                    f"to_timestamp(CAST({epoch} AS bigint))"
                    if self.postgres
                    else f"datetime({epoch}, 'unixepoch')"
                )
            else:
                exprs.append(f"substr({value}, 1, {kind})")
        return exprs

    def _mos(self, text: str) -> str:
        scores = []
        for key in MOS_KEYS:
            if self.postgres:
                number = f"substring({text} from '{key}=([0-9]{{1,3}}(?:[.][0-9]{{1,8}})?)')"
                score = f"CAST({number} AS double precision)"
            else:
                # CAST takes the longest number the text starts with ("4.1;MLQKvr=…" → 4.1).
                at = f"instr({text}, '{key}=')"
                after = f"substr({text}, {at} + {len(key) + 1})"
                score = f"CASE WHEN {at} > 0 THEN CAST({after} AS REAL) END"
            scores.append(f"NULLIF({score}, 0)")
        return f"COALESCE({', '.join(scores)})"

    def _staged_insert(self, cursor: Any, data: bytes) -> str:
        """COPY the batch into the session's staging table; the INSERT … SELECT that stores
        it (ingest's named parameters), without its ON CONFLICT."""
        # One staging table per column set: older generations lack some typed columns.
        digest = hashlib.sha1(" ".join(self.names).encode()).hexdigest()[:10]
        stage = f"ingest_stage_{self.model._meta.model_name}_{digest}"
        types = ["integer", *("text" for _ in self.names[1:])]
        if not self._staging_ready:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ("
                + ", ".join(f'"{n}" {t}' for n, t in zip(self.names, types, strict=True))
                + ") ON COMMIT DELETE ROWS"
            )
            self._staging_ready = True
        columns = ", ".join(f'"{n}"' for n in self.names)
        # psycopg's own cursor: its errors (a value COPY refuses) become Django's here.
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy,
        ):
            copy.write(data)
        select = ", ".join(self._converted(lambda name: f'"{name}"', "%(ingest_cluster)s"))
        if not self.calls:
            return (
                f"INSERT INTO {self.table} ({self.target}) "
                f"SELECT %(ingest_file)s, %(ingest_layout)s, {select}, now() FROM {stage}"
            )
        return (
            f"INSERT INTO {self.table} ({self.target}) "
            f"SELECT %(ingest_file)s, %(ingest_layout)s, {select}, now(), c.call_ref FROM {stage}"
            " LEFT JOIN unnest(%(ingest_call_lines)s::integer[], %(ingest_call_refs)s::bigint[])"
            f' AS c(call_line, call_ref) ON c.call_line = {stage}."line"'
        )

    def _values(
        self, cursor: Any, data: list[tuple[Any, ...]], params: dict[str, Any], returning: bool
    ) -> None:
        # The rows as a VALUES table (columns column1, column2, …) converted by one SELECT,
        # so each value is bound once however often its conversion reads it. SQLite needs
        # the WHERE to tell the SELECT's end from the ON CONFLICT clause. N rows of values:
        # positional parameters, the fixed ones first.
        position = {name: i for i, name in enumerate(self.names, start=1)}
        select = ", ".join(self._converted(lambda name: f"column{position[name]}", "%s"))
        width = len(self.names) + self.calls  # with calls, each row ends with its call
        call = f", column{width}" if self.calls else ""
        row = "(" + ", ".join(["%s"] * width) + ")"
        statement = (
            f"INSERT INTO {self.table} ({self.target}) SELECT %s, %s, {select}, %s{call} "
            f"FROM (VALUES {', '.join([row] * len(data))}) WHERE true"
            + (self.returning if returning else self.on_conflict)
        )
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        values = [params["ingest_file"], params["ingest_layout"], params["ingest_cluster"], now]
        values += [value for item in data for value in item]
        cursor.execute(statement, values)


def synchronous_commit(*, flush: bool) -> None:
    """PostgreSQL: whether this session's commits wait for the WAL flush (the default)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SET synchronous_commit TO DEFAULT" if flush else "SET synchronous_commit = off"
        )


def cdrs_read(ids: Sequence[int]) -> list[tuple[int, str, str, int, str]]:
    """The (id, cluster, pkid, layout_id, raw) of the stored CDRs among `ids`, in one query."""
    model = Cdr
    names = ", ".join(column(model, f) for f in ("id", "cluster", "pkid", "layout", "raw"))
    params: dict[str, Any] | list[int]
    if connection.vendor == "postgresql":
        where, params = f"{column(model, 'id')} = ANY(%(ids)s)", {"ids": ids}
    else:
        # N ids: positional placeholders, built here only.
        where = f"{column(model, 'id')} IN ({', '.join(['%s'] * len(ids))})"
        params = list(ids)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {table(model)} WHERE {where}", params)
        return cursor.fetchall()


# --- calls (cdr.calls): assembly and settling -------------------------------------------

# The first key of the advisory locks that make one cluster's assembly take turns (the
# second is the cluster's hash).
_ASSEMBLY_LOCK = 0x43414C4C  # "CALL"
# SQLite binds at most 32,766 parameters per statement.
_SQLITE_PARAMS = 30_000


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of numbers, booleans, text or None: psycopg would adapt a
    list item by item in Python, the slowest part of a statement over thousands of rows."""
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
        elif value is True or value is False:
            parts.append("t" if value else "f")
        elif isinstance(value, int | float):
            parts.append(repr(value))
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{text}"')
    return "{" + ",".join(parts) + "}"


_INTEGER_TYPES = {"smallint", "integer", "bigint"}


def _pg_column(kind: str, values: list[Any]) -> str:
    """`pg_array` for a column of one known type, without its per-value type checks."""
    if kind in _INTEGER_TYPES:
        if None not in values:
            return "{" + ",".join(map(str, values)) + "}"  # the common case, at C speed
        return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"
    if kind == "boolean":
        return "{" + ",".join(["t" if v else "f" for v in values]) + "}"
    if kind == "double precision":
        return "{" + ",".join(["NULL" if v is None else repr(v) for v in values]) + "}"
    return pg_array(values)


def _rows(
    alias: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> tuple[str, dict[str, Any]]:
    """A FROM item `alias` with the given (name, PostgreSQL type) columns holding `rows`,
    and its named parameters: arrays through `unnest` on PostgreSQL, a VALUES list on SQLite
    (at most `_SQLITE_PARAMS` values: callers send chunks)."""
    names = [name for name, _ in columns]
    if _postgres():
        params = {
            f"{alias}_{name}": _pg_column(kind, [row[i] for row in rows])
            for i, (name, kind) in enumerate(columns)
        }
        arrays = ", ".join(f"%({alias}_{name})s::{kind}[]" for name, kind in columns)
        return f"unnest({arrays}) AS {alias}({', '.join(names)})", params
    params, values = {}, []
    for j, row in enumerate(rows):
        keys = [f"{alias}_{j}_{i}" for i in range(len(names))]
        params.update(zip(keys, row, strict=True))
        values.append("(" + ", ".join(f"%({key})s" for key in keys) + ")")
    renamed = ", ".join(f"column{i + 1} AS {name}" for i, name in enumerate(names))
    return f"(SELECT {renamed} FROM (VALUES {', '.join(values)})) AS {alias}", params


def _chunks(rows: Sequence[Any], width: int) -> Iterator[Sequence[Any]]:
    """`rows` in pieces one statement can bind (all of them at once on PostgreSQL)."""
    step = len(rows) if _postgres() else max(1, _SQLITE_PARAMS // width)
    for start in range(0, len(rows), step or 1):
        yield rows[start : start + step]


def _in(name: str, values: Sequence[int], params: dict[str, Any]) -> str:
    """`IN (…)` for the ids `values`, their parameters added to `params` under `name`."""
    if _postgres():
        params[name] = _pg_column("bigint", list(values))
        return f"= ANY(%({name})s::bigint[])"
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
_KEY_COLUMNS = (("kind", "smallint"), ("number", "bigint"))


def _by_cluster(keys: Iterable[Key]) -> dict[str, list[Key]]:
    """Keys grouped by cluster: one statement per cluster (a batch has one, mostly), with
    the cluster a single parameter and the rest integer arrays."""
    grouped: dict[str, list[Key]] = {}
    for key in sorted(keys):
        grouped.setdefault(key[0], []).append(key)
    return grouped


def keys_find(keys: Iterable[Key]) -> dict[Key, tuple[int, int]]:
    """The call and last-seen time of each of `keys` that names a call."""
    found: dict[Key, tuple[int, int]] = {}
    cluster, kind, number, call, seen = (
        column(CallKey, n) for n in ("cluster", "kind", "number", "call", "seen")
    )
    for name, group in _by_cluster(keys).items():
        for chunk in _chunks(group, 2):
            source, params = _rows("b", _KEY_COLUMNS, [key[1:] for key in chunk])
            params["cluster"] = name
            rows = _execute(
                f"SELECT k.{kind}, k.{number}, k.{call}, k.{seen} FROM {table(CallKey)} k "
                f"JOIN {source} ON k.{cluster} = %(cluster)s AND k.{kind} = b.kind "
                f"AND k.{number} = b.number",
                params,
            )
            for k, n, call_id, when in rows:
                found[(name, k, n)] = (call_id, when)
    return found


def keys_upsert(keys: dict[Key, tuple[int, int]]) -> None:
    """Point each key at its call (with the time it was last seen)."""
    names = [column(CallKey, n) for n in ("cluster", "kind", "number", "call", "seen")]
    cluster, kind, number, call, seen = names
    columns = (*_KEY_COLUMNS, ("call", "bigint"), ("seen", "bigint"))
    for name, group in _by_cluster(keys).items():
        rows = [(*key[1:], *keys[key]) for key in group]
        for chunk in _chunks(rows, len(columns)):
            source, params = _rows("v", columns, chunk)
            params["cluster"] = name
            # SQLite needs the WHERE to tell the SELECT's end from the ON CONFLICT clause.
            _execute(
                f"INSERT INTO {table(CallKey)} ({', '.join(names)}) SELECT %(cluster)s, v.kind, "
                f"v.number, v.call, v.seen FROM {source} WHERE true ON CONFLICT ({cluster}, "
                f"{kind}, {number}) DO UPDATE SET {call} = excluded.{call}, "
                f"{seen} = excluded.{seen}",
                params,
            )


def calls_create(rows: Sequence[tuple[str, int, int]], now: datetime) -> list[int]:
    """New calls for (cluster, callManagerId, callId) rows, in order; their ids."""
    name, pk = table(Call), column(Call, "id")
    fields = ("cluster", "call_manager_id", "call_id", "first_arrival_at", "last_arrival_at")
    names = ", ".join([pk, *(column(Call, n) for n in fields)])
    if _postgres():
        # Ids drawn first, so that they pair with the rows whatever order INSERT takes.
        sequence = _execute(
            "SELECT pg_get_serial_sequence(%(table)s, %(column)s)",
            {"table": Call._meta.db_table, "column": Call._meta.pk.column},
        )[0][0]
        ids = [
            row[0]
            for row in _execute(
                "SELECT nextval(%(sequence)s::regclass) FROM generate_series(1, %(n)s)",
                {"sequence": sequence, "n": len(rows)},
            )
        ]
    else:
        # SQLite: the transaction holds the write lock from its start (IMMEDIATE).
        last = _execute(f"SELECT COALESCE(max({pk}), 0) FROM {name}", {})[0][0]
        ids = list(range(last + 1, last + 1 + len(rows)))
    columns = (("id", "bigint"), ("cluster", "text"), ("cm", "integer"), ("call", "bigint"))
    values = [
        (call_id, cluster, cm or None, number or None)
        for call_id, (cluster, cm, number) in zip(ids, rows, strict=True)
    ]
    for chunk in _chunks(values, len(columns)):
        source, params = _rows("v", columns, chunk)
        params["now"] = now
        _execute(
            f"INSERT INTO {name} ({names}) SELECT v.id, v.cluster, v.cm, v.call, %(now)s, "
            f"%(now)s FROM {source}",
            params,
        )
    return ids


def calls_merge(pairs: Sequence[tuple[int, int]]) -> None:
    """Merge each (call, into) pair: its records and keys move to `into`, and it is marked
    merged (kept, so that what refers to it still resolves)."""
    columns = (("other", "bigint"), ("target", "bigint"))
    for chunk in _chunks(pairs, 2):
        for model, field in ((Cdr, "call_ref"), (Cmr, "call_ref"), (CallKey, "call")):
            source, params = _rows("m", columns, chunk)
            ref, name = column(model, field), table(model)
            _execute(
                f"UPDATE {name} SET {ref} = m.target FROM {source} WHERE {name}.{ref} = m.other",
                params,
            )
        source, params = _rows("m", columns, chunk)
        name, pk = table(Call), column(Call, "id")
        _execute(
            f"UPDATE {name} SET {column(Call, 'merged_into')} = m.target FROM {source} "
            f"WHERE {name}.{pk} = m.other",
            params,
        )


def calls_arrived(ids: Sequence[int], now: datetime) -> None:
    """New records joined these calls: they are open until nothing more arrives."""
    for chunk in _chunks(ids, 1):
        params: dict[str, Any] = {"now": now}
        where = _in("ids", chunk, params)
        _execute(
            f"UPDATE {table(Call)} SET {column(Call, 'last_arrival_at')} = %(now)s, "
            f"{column(Call, 'settled_at')} = NULL, {column(Call, 'held_until')} = NULL "
            f"WHERE {column(Call, 'id')} {where}",
            params,
        )


def calls_delete(ids: Sequence[int]) -> None:
    for chunk in _chunks(ids, 1):
        params: dict[str, Any] = {}
        where = _in("ids", chunk, params)
        _execute(f"DELETE FROM {table(CallKey)} WHERE {column(CallKey, 'call')} {where}", params)
        _execute(f"DELETE FROM {table(Call)} WHERE {column(Call, 'id')} {where}", params)


# --- settling ------------------------------------------------------------------------------


def _open() -> str:
    return f"{column(Call, 'settled_at')} IS NULL AND {column(Call, 'merged_into')} IS NULL"


def _lock_clause() -> str:
    return " FOR UPDATE SKIP LOCKED" if _postgres() else ""


def calls_due(cutoff: datetime, now: datetime, limit: int) -> dict[int, bool]:
    """Open calls nothing has joined since `cutoff` and that are not held (locked until the
    transaction ends; other sweeps skip them): id → whether a hold on it ran out."""
    held = column(Call, "held_until")
    rows = _execute(
        f"SELECT {column(Call, 'id')}, {held} IS NOT NULL FROM {table(Call)} WHERE {_open()} "
        f"AND {column(Call, 'last_arrival_at')} <= %(cutoff)s "
        f"AND ({held} IS NULL OR {held} <= %(now)s) "
        f"ORDER BY {column(Call, 'last_arrival_at')} LIMIT %(limit)s{_lock_clause()}",
        {"cutoff": cutoff, "now": now, "limit": limit},
    )
    return {call_id: bool(expired) for call_id, expired in rows}


def calls_lock(ids: Sequence[int], cutoff: datetime | None, now: datetime) -> dict[int, bool]:
    """Those of `ids` that are open (and due, with a `cutoff`), locked as by `calls_due`."""
    held = column(Call, "held_until")
    params: dict[str, Any] = {"now": now}
    where = f"{column(Call, 'id')} {_in('ids', ids, params)} AND {_open()}"
    if cutoff is not None:
        params["cutoff"] = cutoff
        where += (
            f" AND {column(Call, 'last_arrival_at')} <= %(cutoff)s"
            f" AND ({held} IS NULL OR {held} <= %(now)s)"
        )
    rows = _execute(
        f"SELECT {column(Call, 'id')}, {held} IS NOT NULL FROM {table(Call)} WHERE {where} "
        f"ORDER BY {column(Call, 'id')}{_lock_clause()}",
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
        _epoch(column(Cdr, name)) if name in _TIMES else column(Cdr, name) for name in _LEG_COLUMNS
    ]
    call = column(Cdr, "call_ref")
    rows = _execute(
        f"SELECT {call}, {', '.join(columns)} FROM {table(Cdr)} "
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
    call = column(Cmr, "call_ref")
    rows = _execute(
        f"SELECT {call}, {', '.join(column(Cmr, n) for n in names)} FROM {table(Cmr)} "
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
        f"UPDATE {table(Call)} SET {column(Call, 'held_until')} = %(until)s "
        f"WHERE {column(Call, 'id')} {_in('ids', ids, params)}",
        params,
    )


# Facts stored per call: (CallFacts attribute = Call field, PostgreSQL type); the two times
# travel as epoch seconds.
_FACTS = (
    ("started", "bigint"),
    ("ended", "bigint"),
    ("legs", "integer"),
    ("cmr_count", "integer"),
    ("answered", "boolean"),
    ("missed", "boolean"),
    ("voicemail", "boolean"),
    ("transferred", "boolean"),
    ("forwarded", "boolean"),
    ("conference", "boolean"),
    ("duration", "integer"),
    ("ring_seconds", "integer"),
    ("caller", "text"),
    ("dialed", "text"),
    ("answered_by", "text"),
    ("cause", "bigint"),
    ("mos_min", "double precision"),
    ("jitter_max", "integer"),
    ("loss_pct", "double precision"),
)
_FACT_FIELDS = {"started": "started_at", "ended": "ended_at"}


def calls_facts_store(rows: Sequence[tuple[int, CallFacts | None]], now: datetime) -> None:
    """Store each call's facts (None: settled without any) and mark it settled."""
    name, pk = table(Call), column(Call, "id")
    state = (
        f"{column(Call, 'settled_at')} = %(now)s, {column(Call, 'held_until')} = NULL, "
        f"{column(Call, 'settle_count')} = {column(Call, 'settle_count')} + 1"
    )
    bare = [call_id for call_id, facts in rows if facts is None]
    for chunk in _chunks(bare, 1):
        params: dict[str, Any] = {"now": now}
        _execute(f"UPDATE {name} SET {state} WHERE {pk} {_in('bare', chunk, params)}", params)
    full = [
        (call_id, *(getattr(facts, attr) for attr, _ in _FACTS))
        for call_id, facts in rows
        if facts is not None
    ]
    columns = (("id", "bigint"), *_FACTS)
    sets = ", ".join(
        f"{column(Call, _FACT_FIELDS.get(attr, attr))} = "
        + (_time(f"v.{attr}") if attr in _FACT_FIELDS else f"v.{attr}")
        for attr, _ in _FACTS
    )
    for chunk in _chunks(full, len(columns)):
        source, params = _rows("v", columns, chunk)
        params["now"] = now
        _execute(
            f"UPDATE {name} SET {state}, {sets} FROM {source} WHERE {name}.{pk} = v.id", params
        )


# --- settling in one statement (PostgreSQL) ------------------------------------------------

# `cdr.facts.call_facts`, written as aggregates over a batch of calls' legs, so that
# PostgreSQL settles a batch in one statement without a leg travelling to Python. The Python
# function stays the definition: tests/test_calls.py compares both over every scenario.
_FACTS_SQL = """
WITH due AS ({due}),
leg AS (
  SELECT l.{call_ref} AS call, l.{cdr_id} AS id,
    {orig} AS orig, {conn} AS conn, {disc} AS disc,
    l.{calling} AS calling, l.{original} AS original, l.{final} AS final,
    l.{orig_cause} AS orig_cause, l.{dest_cause} AS dest_cause,
    l.{orig_term} AS orig_term, l.{dest_term} AS dest_term, l.{join} AS joins,
    l.{orig_rr} AS orig_rr, l.{last_rr} AS last_rr,
    l.{orig_ro} AS orig_ro, l.{last_ro} AS last_ro,
    {conn} IS NOT NULL AND NOT (l.{final} = ANY(%(vm)s::text[])) AS person
  FROM {cdr} l JOIN due ON l.{call_ref} = due.id
),
f AS (
  SELECT call, count(*) AS legs,
    (array_agg(orig ORDER BY COALESCE(orig, 0), id))[1] AS started,
    (array_agg(calling ORDER BY COALESCE(orig, 0), id))[1] AS caller,
    (array_agg(COALESCE(NULLIF(original, ''), final) ORDER BY COALESCE(orig, 0), id))[1]
      AS dialed,
    max(disc) AS last_disc,
    min(conn) AS first_conn,
    max(COALESCE(disc, 0)) FILTER (WHERE conn IS NOT NULL) AS last_conn_disc,
    COALESCE(bool_or(person), false) AS answered,
    COALESCE(bool_or(conn IS NOT NULL AND final = ANY(%(vm)s::text[])), false) AS voicemail,
    COALESCE(bool_or(original <> '' OR final <> ''), false) AS dialled,
    COALESCE(bool_or(10 IN (orig_term, dest_term, joins, orig_ro, last_ro)
      OR orig_rr IN (4, 34) OR last_rr IN (4, 34)), false) AS transferred,
    COALESCE(bool_or(4 IN (orig_term, dest_term, joins, orig_ro, last_ro)
      OR orig_rr = 98 OR last_rr = 98 OR final LIKE 'b00%%'), false) AS conference,
    COALESCE(bool_or(5 IN (orig_term, dest_term, joins, orig_ro, last_ro)
      OR 14 IN (orig_term, dest_term, joins, orig_ro, last_ro)
      OR orig_rr = ANY(%(forward)s::int[]) OR last_rr = ANY(%(forward)s::int[])), false)
      AS forwarded,
    (array_agg(final ORDER BY conn, id) FILTER (WHERE person))[1] AS answered_by,
    (array_agg(CASE
        WHEN COALESCE(dest_cause, 0) NOT IN (0, %(split)s) THEN dest_cause
        WHEN COALESCE(orig_cause, 0) NOT IN (0, %(split)s) THEN orig_cause
        WHEN COALESCE(dest_cause, 0) <> 0 THEN dest_cause
        ELSE orig_cause END
      ORDER BY COALESCE(disc, 0) DESC, id DESC))[1] AS cause,
    COALESCE(bool_or(orig_term IN (10, 4) OR dest_term IN (10, 4)), false)
      AND NOT COALESCE(bool_or(joins IN (10, 4)), false) AS awaits
  FROM leg GROUP BY call
),
q AS (
  SELECT m.{cmr_call_ref} AS call, count(*) AS n,
    min(m.{mos}) FILTER (WHERE m.{mos} > 0) AS mos_min,
    max(m.{jitter}) AS jitter_max,
    sum(GREATEST(COALESCE(m.{lost}, 0), 0)) AS lost,
    sum(GREATEST(COALESCE(m.{received}, 0), 0)) AS received
  FROM {cmr} m JOIN due ON m.{cmr_call_ref} = due.id GROUP BY 1
),
x AS (
  SELECT due.id, f.call IS NOT NULL AS has_legs,
    NOT %(force)s AND NOT due.expired AND (f.call IS NULL OR f.awaits) AS hold
  FROM due LEFT JOIN f ON f.call = due.id
),
held AS (
  UPDATE {call} c SET {held_until} = %(hold_until)s FROM x WHERE c.{id} = x.id AND x.hold
  RETURNING c.{id}
),
settled AS (
  UPDATE {call} c SET {settled_at} = %(now)s, {held_until} = NULL,
    {settle_count} = c.{settle_count} + 1,
    {started_at} = CASE WHEN x.has_legs THEN to_timestamp(f.started) ELSE c.{started_at} END,
    {ended_at} = CASE WHEN x.has_legs THEN to_timestamp(COALESCE(f.last_disc, f.started))
      ELSE c.{ended_at} END,
    {legs} = COALESCE(f.legs, c.{legs}),
    {cmr_count} = CASE WHEN x.has_legs THEN COALESCE(q.n, 0) ELSE c.{cmr_count} END,
    {answered} = COALESCE(f.answered, c.{answered}),
    {missed} = COALESCE(NOT f.answered AND f.dialled, c.{missed}),
    {voicemail} = COALESCE(f.voicemail, c.{voicemail}),
    {transferred} = COALESCE(f.transferred, c.{transferred}),
    {forwarded} = COALESCE(f.forwarded, c.{forwarded}),
    {conference} = COALESCE(f.conference, c.{conference}),
    {duration} = CASE WHEN NOT x.has_legs THEN c.{duration}
      WHEN f.answered AND f.first_conn IS NOT NULL
        THEN GREATEST(0, f.last_conn_disc - f.first_conn) ELSE 0 END,
    {ring_seconds} = CASE WHEN NOT x.has_legs THEN c.{ring_seconds}
      WHEN f.started IS NULL THEN NULL
      WHEN f.first_conn IS NOT NULL THEN GREATEST(0, f.first_conn - f.started)
      ELSE GREATEST(0, COALESCE(f.last_disc, f.started) - f.started) END,
    {caller} = COALESCE(f.caller, c.{caller}),
    {dialed} = COALESCE(f.dialed, c.{dialed}),
    {answered_by} = CASE WHEN x.has_legs THEN COALESCE(f.answered_by, '')
      ELSE c.{answered_by} END,
    {cause} = CASE WHEN x.has_legs THEN f.cause ELSE c.{cause} END,
    {mos_min} = CASE WHEN x.has_legs THEN q.mos_min ELSE c.{mos_min} END,
    {jitter_max} = CASE WHEN x.has_legs THEN q.jitter_max ELSE c.{jitter_max} END,
    {loss_pct} = CASE WHEN x.has_legs AND q.lost + q.received > 0
      THEN CAST((200000 * CAST(q.lost AS bigint) + CAST(q.lost + q.received AS bigint))
        / (2 * CAST(q.lost + q.received AS bigint)) AS double precision) / 1000
      WHEN x.has_legs THEN NULL
      ELSE c.{loss_pct} END
  FROM x LEFT JOIN f ON f.call = x.id LEFT JOIN q ON q.call = x.id
  WHERE c.{id} = x.id AND NOT x.hold
  RETURNING c.{id}, x.has_legs
)
SELECT id, has_legs FROM settled UNION ALL SELECT id, false FROM held
"""


def _facts_statement(due: str) -> str:
    cdr = {
        name: column(Cdr, field)
        for name, field in (
            ("call_ref", "call_ref"),
            ("calling", "calling_party_number"),
            ("original", "original_called_party_number"),
            ("final", "final_called_party_number"),
            ("orig_cause", "orig_cause_value"),
            ("dest_cause", "dest_cause_value"),
            ("orig_term", "orig_termination_on_behalf_of"),
            ("dest_term", "dest_termination_on_behalf_of"),
            ("join", "join_on_behalf_of"),
            ("orig_rr", "orig_redirect_reason"),
            ("last_rr", "last_redirect_reason"),
            ("orig_ro", "orig_redirect_on_behalf_of"),
            ("last_ro", "last_redirect_on_behalf_of"),
        )
    }
    times = {
        name: _epoch("l." + column(Cdr, field))
        for name, field in (
            ("orig", "origination_at"),
            ("conn", "connect_at"),
            ("disc", "disconnect_at"),
        )
    }
    cmr = {
        "cmr_call_ref": column(Cmr, "call_ref"),
        "mos": column(Cmr, "mos"),
        "jitter": column(Cmr, "jitter"),
        "lost": column(Cmr, "packets_lost"),
        "received": column(Cmr, "packets_received"),
    }
    calls = {
        name: column(Call, name)
        # The state columns, then every fact column `calls_facts_store` writes too.
        for name in (
            "settled_at",
            "held_until",
            "settle_count",
            *(_FACT_FIELDS.get(attr, attr) for attr, _ in _FACTS),
        )
    }
    return _FACTS_SQL.format(
        cdr_id=column(Cdr, "id"),
        due=due,
        cdr=table(Cdr),
        cmr=table(Cmr),
        call=table(Call),
        id=column(Call, "id"),
        **cdr,
        **times,
        **cmr,
        **calls,
    )


def calls_settle_in_one_statement(
    *,
    now: datetime,
    cutoff: datetime | None,
    limit: int,
    ids: Sequence[int] | None,
    force: bool,
    hold_until: datetime,
    voicemail: Iterable[str],
    forward_reasons: Iterable[int],
    split: int,
) -> tuple[list[int], int]:
    """PostgreSQL: settle one batch of due calls (or of `ids`) in one statement — pick and
    lock them, compute their facts from their legs and CMRs, hold those that wait, store
    the rest; the ids settled with facts (what the call listener is told), and how many
    calls the batch took up."""
    held = column(Call, "held_until")
    where = f"{_open()} AND ({held} IS NULL OR {held} <= %(now)s OR %(force)s)"
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "force": force,
        "hold_until": hold_until,
        "vm": pg_array(sorted(voicemail)),
        "forward": _pg_column("integer", sorted(forward_reasons)),
        "split": split,
    }
    if ids is not None:
        where += f" AND {column(Call, 'id')} {_in('ids', ids, params)}"
    if cutoff is not None:
        params["cutoff"] = cutoff
        where += f" AND {column(Call, 'last_arrival_at')} <= %(cutoff)s"
    due = (
        f"SELECT {column(Call, 'id')} AS id, {held} IS NOT NULL AS expired FROM {table(Call)} "
        f"WHERE {where} ORDER BY {column(Call, 'last_arrival_at')} LIMIT %(limit)s "
        "FOR UPDATE SKIP LOCKED"
    )
    rows = _execute(_facts_statement(due), params)
    return sorted(call_id for call_id, has_legs in rows if has_legs), len(rows)
