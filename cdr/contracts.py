"""What ingest publishes to the apps above it: "these records were stored in this batch".

`cdr` is the lower app: it never imports `webhooks` (STYLE.md, "Dependency direction").
An app that wants to act on newly stored CDRs implements `BatchListener` and registers a
factory for it with `batch_listener_register` in its `AppConfig.ready()`; each file ingest
(and `replay_cdr --dry-run`) makes one listener with it.

On PostgreSQL a listener may add to the very statement that stores the batch
(`BatchListener.statement`): ingest runs

    WITH ins AS (INSERT … ON CONFLICT DO NOTHING RETURNING id, line)<tail ctes>
    SELECT (SELECT count(*) FROM ins)<tail select>

The names a tail may read are declared here, in `StoredCte`, and nowhere else: the CTE's
name and its columns (the new record's id and its file line). A tail is built with
`psycopg.sql` from those names, and its parameters are named (`%(name)s`), never positional,
so nothing has to line up with ingest's own. tests/test_dependencies.py checks both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from psycopg import sql

from cdr.parsing import Layout, Row


class StoredCte:
    """The statement-tail contract: the CTE holding the records this batch newly stored."""

    NAME: Final = "ins"
    ID: Final = "id"  # the stored record's primary key (Cdr.id)
    LINE: Final = "line"  # its line in the file (Cdr.line); unique within the batch
    COLUMNS: Final = (ID, LINE)

    name = sql.Identifier(NAME)
    id = sql.Identifier(NAME, ID)
    line = sql.Identifier(NAME, LINE)
    line_column = sql.Identifier(LINE)


# Ingest's own named parameters in the statement: a tail must use other names.
INGEST_PARAMS: Final = frozenset(
    {"ingest_file", "ingest_layout", "ingest_cluster", "ingest_call_lines", "ingest_call_refs"}
)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record this ingest stored: its database id and its values in layout order."""

    id: int
    values: list[str]
    line: int


@dataclass(frozen=True, slots=True)
class StatementTail:
    """What a listener adds to the statement that stores the batch (PostgreSQL).

    `ctes` continues the WITH (it starts with a comma) and may read `StoredCte` only;
    `select` adds columns to the final row (each starts with a comma); `params` fill the
    named placeholders of both; `done` gets the added columns' values, still inside the
    batch's transaction. The new records never travel back to Python.
    """

    ctes: sql.Composable
    select: sql.Composable
    params: Mapping[str, Any]
    done: Callable[[tuple[Any, ...]], None]


class BatchListener(Protocol):
    """Told about the CDRs each ingest batch newly stored; one instance per file.

    `refresh` runs on the ingest's thread before the first batch is read; `prepare` on the
    read-ahead thread (it must not touch the database), its result coming back as
    `prepared`. Then, inside the batch's transaction: on PostgreSQL, when `in_statement`,
    `statement` is asked for a tail before the batch is stored (None: the batch needs
    nothing from the listener) and `stored` is never called; otherwise `stored` gets the
    records the batch newly stored. `dry_run` counts, per name, what the rows would do,
    without storing or sending anything (`replay_cdr --dry-run`).
    """

    in_statement: bool

    def refresh(self, layout: Layout) -> None: ...

    def prepare(self, layout: Layout, rows: Sequence[Row]) -> Any: ...

    def statement(
        self, layout: Layout, rows: Sequence[Row], prepared: Any
    ) -> StatementTail | None: ...

    def stored(self, layout: Layout, stored: list[StoredRecord], prepared: Any) -> None: ...

    def dry_run(self, layout: Layout, rows: Sequence[Row]) -> Mapping[str, int]: ...


_factory: Callable[[], BatchListener] | None = None


def batch_listener_register(factory: Callable[[], BatchListener]) -> None:
    """Make ingest tell `factory()`'s listener about every batch (from `AppConfig.ready`).

    One listener: the statement has room for one tail, and a second listener would need
    the tails combined, a choice to make when there is one.
    """
    global _factory
    if _factory is not None and _factory is not factory:
        raise RuntimeError(f"a batch listener is already registered: {_factory!r}")
    _factory = factory


def batch_listener() -> BatchListener | None:
    """A new listener for one file, or None when no app registered one."""
    return _factory() if _factory is not None else None


class CallListener(Protocol):
    """Told which calls the settle sweep has just settled (`cdr.calls`): their facts are in
    the `Call` rows, their records point at them. Called inside the sweep's transaction,
    so what the listener writes commits with the settle, or neither does; a call settled
    again (a late leg opened it) is passed again."""

    def settled(self, call_ids: Sequence[int]) -> None: ...


_call_listener: CallListener | None = None


def call_listener_register(listener: CallListener) -> None:
    """Make the settle sweep tell `listener` about settled calls (from `AppConfig.ready`)."""
    global _call_listener
    if _call_listener is not None and _call_listener is not listener:
        raise RuntimeError(f"a call listener is already registered: {_call_listener!r}")
    _call_listener = listener


def call_listener() -> CallListener | None:
    return _call_listener
