"""The cdr app's hand-written SQL, and the only place in the app that runs any.

Everything else in `cdr/` uses the ORM or calls these functions. Table and column names come
from the models' metadata (`_meta.db_table`, `_meta.get_field(…).column`), quoted with
`connection.ops.quote_name` (both databases run these statements); parameters are named
(`%(name)s`) except in a VALUES list of N rows, which `BatchInsert.values` builds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils import timezone
from psycopg import sql

from cdr.contracts import StatementTail, StoredCte
from cdr.models import Cdr

# The kinds of a typed column (the others are a text length): see `cdr.services.CDR_COLUMNS`.
INT, TIME = "int", "time"
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
        self, model: type[Model], columns: Sequence[tuple[str, str | int]], *, postgres: bool
    ):
        self.model = model
        self.columns = list(columns)
        self.postgres = postgres
        q = connection.ops.quote_name
        self.table = table(model)
        # Staging columns carry the field names; the target's are the model's columns.
        self.names = [*STAGED, *(col for col, _ in self.columns)]
        fields = ["file", "layout", *self.names, "ingested_at"]
        self.target = ", ".join(column(model, name) for name in fields)
        self.on_conflict = (
            f" ON CONFLICT ({column(model, 'cluster')}, {column(model, 'pkid')}) DO NOTHING"
        )
        # The columns of `StoredCte`, which a listener's statement tail reads, by its names.
        self.returning = (
            self.on_conflict
            + " RETURNING "
            + ", ".join(f"{column(model, name)} AS {q(name)}" for name in StoredCte.COLUMNS)
        )
        self._staging_ready = False  # the session's staging table exists

    def rolled_back(self) -> None:
        """The batch's transaction rolled back, and with it perhaps the staging table."""
        self._staging_ready = False

    def run(self, data: Any, params: dict[str, Any], *, returning: bool) -> Any:
        """Store the batch (COPY text on PostgreSQL, parameter tuples elsewhere); the
        (id, line) of the new records, or only their count without `returning`."""
        with connection.cursor() as cursor:
            if self.postgres:
                insert = self._staged_insert(cursor, data)
                cursor.execute(insert + (self.returning if returning else self.on_conflict), params)
            else:
                self._values(cursor, data, params, returning)
            return cursor.fetchall() if returning else cursor.rowcount

    def run_with(self, data: bytes, params: dict[str, Any], tail: StatementTail) -> tuple[Any, ...]:
        """PostgreSQL: store the batch and run `tail` in the same statement; its one row
        (the count of new records, then the tail's columns)."""
        with connection.cursor() as cursor:
            insert = sql.SQL(self._staged_insert(cursor, data) + self.returning)
            statement = sql.SQL("WITH {} AS ({}){} SELECT (SELECT count(*) FROM {}){}").format(
                StoredCte.name, insert, tail.ctes, StoredCte.name, tail.select
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
        return (
            f"INSERT INTO {self.table} ({self.target}) "
            f"SELECT %(ingest_file)s, %(ingest_layout)s, {select}, now() FROM {stage}"
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
        row = "(" + ", ".join(["%s"] * len(self.names)) + ")"
        statement = (
            f"INSERT INTO {self.table} ({self.target}) SELECT %s, %s, {select}, %s "
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
