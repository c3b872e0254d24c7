"""The webhooks app's hand-written SQL, and the only place in the app that runs any.

Everything else in `webhooks/` uses the ORM or calls these functions. Table and column names
come from the models' metadata (`_meta.db_table`, `_meta.get_field(…).column`): quoted with
`connection.ops.quote_name` in the statements both databases run, and with
`psycopg.sql.Identifier` in the PostgreSQL statement tail, which `cdr.contracts` has built with
`psycopg.sql`. Parameters are named (`%(name)s`) wherever a statement has a fixed set; the
helpers that take N ids or N rows build those placeholders themselves, positionally.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from psycopg import sql

from cdr.contracts import StoredCte
from webhooks.models import Condition, Delivery, DeliveryAttempt, Webhook


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def _ident(model: type[Model], field: str | None = None) -> sql.Identifier:
    """psycopg's identifier of `model`'s table, or of one of its columns."""
    if field is None:
        return sql.Identifier(model._meta.db_table)
    return sql.Identifier(model._meta.get_field(field).column)


def array(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal: psycopg would adapt a list item by item, in Python."""
    return "{" + ",".join(map(str, numbers)) + "}"


def _ids_in(model: type[Model], ids: Sequence[int]) -> tuple[str, list[Any]]:
    """`id` among `ids`: one array parameter on PostgreSQL, N placeholders on SQLite."""
    pk = _column(model, "id")
    if connection.vendor == "postgresql":
        return f"{pk} = ANY(%s)", [list(ids)]
    return f"{pk} IN ({', '.join(['%s'] * len(ids))})", list(ids)


# --- trigger -----------------------------------------------------------------------------


def webhooks_version() -> tuple[Any, ...]:
    """What changes whenever an operator changes the enabled webhooks or any condition."""
    webhook, condition = _table(Webhook), _table(Condition)
    enabled, updated = _column(Webhook, "enabled"), _column(Webhook, "updated_at")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {webhook} WHERE {enabled}),"
            f" (SELECT max({updated}) FROM {webhook} WHERE {enabled}),"
            f" (SELECT count(*) FROM {condition}), (SELECT max({_column(Condition, 'id')})"
            f" FROM {condition})"
        )
        return tuple(cursor.fetchone())


def webhooks_lock(ids: list[int]) -> set[int]:
    """PostgreSQL: lock the webhooks' rows in id order until the transaction ends; the ids
    of those that exist."""
    pk = _column(Webhook, "id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {pk} FROM {_table(Webhook)} WHERE {pk} = ANY(%(ids)s::bigint[])"
            f" ORDER BY {pk} FOR NO KEY UPDATE",
            {"ids": array(ids)},
        )
        return {row[0] for row in cursor.fetchall()}


def delivery_id_sequence() -> str:
    """PostgreSQL: the name of the sequence behind `Delivery.id`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_serial_sequence(%(table)s, %(column)s)",
            {"table": Delivery._meta.db_table, "column": Delivery._meta.get_field("id").column},
        )
        return str(cursor.fetchone()[0])


def batch_tail(
    defaults: Mapping[str, Any],
    *,
    gone: bool,
    skipped: bool,
) -> tuple[sql.Composed, sql.Composed]:
    """PostgreSQL: the CTEs and final columns that a batch's statement gets from webhooks.

    Reads the stored records only through the names `cdr.contracts.StoredCte` declares; `m`
    pairs each matched line with its webhook (`wh_lines`, `wh_webhooks`), `d` inserts one
    event delivery per pair (the columns `defaults` names, from `wh_<column>`), `h` adds the
    hits (`wh_now`), leaving out the webhooks of `wh_gone` when `gone`. The final column is
    the new deliveries' ids, or only their count when `skipped` (nothing to enqueue).

    Event ids are msg_ + 32 hex digits, like `new_event_id`'s: the delivery's own id in 16,
    which makes them unique without an index, then 16 random ones drawn once per statement
    (`wh_event_suffix`), so that an appliance installed again, whose ids start again from 1,
    still sends webhook-ids its receivers have never seen. `wh_sequence` names the sequence
    of the deliveries' ids.
    """
    pairs = sql.SQL(
        "(SELECT m.webhook_id, {id} AS cdr_id FROM m JOIN {ins} USING ({line}){gone}) AS p"
    ).format(
        id=StoredCte.id,
        ins=StoredCte.name,
        line=StoredCte.line_column,
        gone=sql.SQL(" WHERE m.webhook_id <> ALL(%(wh_gone)s::bigint[])" if gone else ""),
    )
    # Every column but the two that vary per row and the event id.
    columns = sql.SQL(", ").join(_ident(Delivery, c) for c in defaults)
    values = sql.SQL(", ").join(sql.Placeholder(f"wh_{c}") for c in defaults)
    insert = sql.SQL(
        "INSERT INTO {table} ({pk}, {webhook}, {cdr}, {event_id}, {columns}) "
        "SELECT n.id, n.webhook_id, n.cdr_id,"
        " 'msg_' || lpad(to_hex(n.id), 16, '0') || %(wh_event_suffix)s, {values} FROM "
        "(SELECT nextval(%(wh_sequence)s::regclass) AS id, p.webhook_id, p.cdr_id FROM {pairs})"
        " AS n RETURNING {pk} AS id, {webhook} AS webhook_id"
    ).format(
        table=_ident(Delivery),
        pk=_ident(Delivery, "id"),
        webhook=_ident(Delivery, "webhook"),
        cdr=_ident(Delivery, "cdr"),
        event_id=_ident(Delivery, "event_id"),
        columns=columns,
        values=values,
        pairs=pairs,
    )
    ctes = sql.SQL(
        ", m AS (SELECT * FROM unnest(%(wh_lines)s::int[], %(wh_webhooks)s::bigint[])"
        " AS m({line}, webhook_id))"
        ", d AS ({insert})"
        ", h AS (UPDATE {webhooks} AS w"
        " SET {hits} = w.{hits} + c.n, {last_hit} = %(wh_now)s"
        " FROM (SELECT webhook_id, count(*) AS n FROM d GROUP BY webhook_id) AS c"
        " WHERE w.{pk} = c.webhook_id)"
    ).format(
        line=StoredCte.line_column,
        insert=insert,
        webhooks=_ident(Webhook),
        hits=_ident(Webhook, "hit_count"),
        last_hit=_ident(Webhook, "last_hit_at"),
        pk=_ident(Webhook, "id"),
    )
    if skipped:
        return ctes, sql.SQL(", (SELECT count(*) FROM d)")
    return ctes, sql.SQL(", (SELECT array_agg(id) FROM d)")


# Call deliveries per INSERT: 16 parameters each, well under SQLite's limit of 32766.
CALL_INSERT_ROWS = 1000


def call_deliveries_insert(
    rows: Sequence[tuple[int, int, str]], defaults: Mapping[str, Any]
) -> list[tuple[int, int]]:
    """Call-scope event deliveries, one per (webhook id, call id, event id) of `rows` that
    has none yet, every other column from `defaults` (datetimes adapted); the (id, webhook
    id) of those inserted. ON CONFLICT DO NOTHING against the (webhook, call) unique index,
    alike on PostgreSQL and SQLite (3.35+): a pair whose delivery exists, or is being
    inserted by a concurrent transaction that then commits, comes back as nothing."""
    columns = [
        _column(Delivery, "webhook"),
        _column(Delivery, "call"),
        _column(Delivery, "event_id"),
    ]
    columns += [_column(Delivery, name) for name in defaults]
    values = list(defaults.values())
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    returning = f"{_column(Delivery, 'id')}, {_column(Delivery, 'webhook')}"
    created: list[tuple[int, int]] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CALL_INSERT_ROWS):
            chunk = rows[start : start + CALL_INSERT_ROWS]
            params: list[Any] = []
            for webhook_id, call_id, event_id in chunk:
                params += [webhook_id, call_id, event_id, *values]
            cursor.execute(
                f"INSERT INTO {_table(Delivery)} ({', '.join(columns)})"
                f" VALUES {', '.join([row] * len(chunk))}"
                f" ON CONFLICT DO NOTHING RETURNING {returning}",
                params,
            )
            created += [(delivery_id, webhook_id) for delivery_id, webhook_id in cursor.fetchall()]
    return created


# --- claim -------------------------------------------------------------------------------


# The first key of PostgreSQL advisory locks taken by claims, per slow webhook (the second).
_CLAIM_LOCK = 0x57484B43


def deliveries_claim(
    ids: Sequence[int],
    returning: Sequence[str],
    *,
    sending: str,
    claimable: Sequence[str],
    until: Any,
    now: Any,
    held: tuple[str, Sequence[Any]] | None,
    stopped: tuple[str, Sequence[Any]],
    event: str,
) -> list[tuple[Any, ...]]:
    """Move those of `ids` whose status is in `claimable` and that are due at `now` to
    `sending` until `until`, counting the attempt, one worker winning each row; the fields
    `returning` of each.

    `held` is a subquery of webhook ids (and its parameters) whose deliveries stay due;
    `stopped` one of webhooks (paused or disabled) whose `event` deliveries stay put. The
    ORM compiles them with positional parameters, and `ids` are N placeholders on SQLite, so
    this statement's parameters are positional. With `held`, claims of a webhook whose last
    attempt timed out also take turns (see `_slow_webhooks`).
    """
    where, id_params = _ids_in(Delivery, ids)
    status, attempts = _column(Delivery, "status"), _column(Delivery, "attempt_count")
    webhook = _column(Delivery, "webhook")
    held_sql, held_params = "", []
    if held is not None:
        held_sql = f" AND {webhook} NOT IN ({held[0]})"
        held_params = list(held[1])
    statement = (
        f"UPDATE {_table(Delivery)} SET {status} = %s, {_column(Delivery, 'claimed_until')} = %s,"
        f" {attempts} = {attempts} + 1 WHERE {where}"
        f" AND {status} IN ({', '.join(['%s'] * len(claimable))})"
        f" AND {_column(Delivery, 'next_attempt_at')} <= %s{held_sql}"
        f" AND NOT ({_column(Delivery, 'kind')} = %s AND {webhook} IN ({stopped[0]}))"
        f" RETURNING {', '.join(_column(Delivery, f) for f in returning)}"
    )
    params = [sending, until, *id_params, *claimable, now, *held_params, event, *stopped[1]]
    with connection.cursor() as cursor:
        slow = _slow_webhooks(cursor, ids) if held is not None else []
        with transaction.atomic() if slow else nullcontext():
            for webhook_id in slow:  # in id order: no deadlock between workers
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%(lock)s, %(webhook)s)",
                    {"lock": _CLAIM_LOCK, "webhook": webhook_id},
                )
            cursor.execute(statement, params)
            return cursor.fetchall()


def _slow_webhooks(cursor: Any, ids: Sequence[int]) -> list[int]:
    """PostgreSQL: the webhooks of `ids` whose last attempt timed out, in id order.

    Each claim sees the database as its statement began: two workers could both find that no
    delivery of such a webhook is being sent, and both claim a batch of it (its batches
    finish at the same moment, so they would, every time). Their claims take turns under an
    advisory lock, each seeing the previous one committed. SQLite runs one writer at a time.
    """
    if connection.vendor != "postgresql":
        return []
    pk = _column(Webhook, "id")
    cursor.execute(
        f"SELECT DISTINCT w.{pk} FROM {_table(Webhook)} w"
        f" JOIN {_table(Delivery)} d ON d.{_column(Delivery, 'webhook')} = w.{pk}"
        f" WHERE d.{_column(Delivery, 'id')} = ANY(%(ids)s)"
        f" AND w.{_column(Webhook, 'last_status')} = 'timeout' ORDER BY w.{pk}",
        {"ids": list(ids)},
    )
    return [webhook_id for (webhook_id,) in cursor.fetchall()]


# --- outcomes ----------------------------------------------------------------------------


def rows_sql(columns: tuple[tuple[str, str], ...], rows: list[tuple[Any, ...]]) -> tuple[str, list]:
    """A table expression of `rows`, with columns column1…, and its parameters.

    PostgreSQL: json_to_recordset() of ONE parameter, a JSON array of the rows: the statement
    is short and the same whatever the batch size, and the driver quotes one string (quoting
    hundreds of parameters, or typed arrays of JSON text, costs more than the rest of the
    batch). SQLite: a VALUES list of N rows, its placeholders positional."""
    if connection.vendor == "postgresql":
        keys = [f"column{i}" for i in range(1, len(columns) + 1)]
        types = ", ".join(f"{key} {kind}" for key, (_, kind) in zip(keys, columns, strict=True))
        data = json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=str)
        return f"json_to_recordset(%s) AS v({types})", [data]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"(VALUES {', '.join([row] * len(rows))}) AS v", [x for r in rows for x in r]


# (field, PostgreSQL type) of the deliveries' new states, per batch.
DELIVERY_OUTCOME_COLUMNS = (
    ("id", "bigint"), ("status", "varchar"), ("next_attempt_at", "timestamptz"),
    ("last_status_code", "integer"), ("last_error", "text"), ("reason", "varchar"),
    ("finished_at", "timestamptz"), ("body", "text"),
)  # fmt: skip


def outcomes_update(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    """Write the sent deliveries' new states, one UPDATE for the batch: each row holds the
    fields of `DELIVERY_OUTCOME_COLUMNS`, datetimes adapted; a body None keeps the stored one,
    and each delivery's claim ends."""
    source, params = rows_sql(DELIVERY_OUTCOME_COLUMNS, rows)
    table = _table(Delivery)
    sets = [f"{_column(Delivery, 'claimed_until')} = NULL"]
    for i, (field, _) in enumerate(DELIVERY_OUTCOME_COLUMNS[1:], start=2):
        name = _column(Delivery, field)
        value = f"COALESCE(v.column{i}, {table}.{name})" if field == "body" else f"v.column{i}"
        sets.append(f"{name} = {value}")
    cursor.execute(
        f"UPDATE {table} SET {', '.join(sets)} FROM {source}"
        f" WHERE {table}.{_column(Delivery, 'id')} = v.column1",
        params,
    )


# (field, PostgreSQL type) of the attempts, per batch.
ATTEMPT_COLUMNS = (
    ("delivery", "bigint"), ("number", "integer"), ("trigger", "varchar"),
    ("started_at", "timestamptz"), ("url", "varchar"), ("request_headers", "jsonb"),
    ("status_code", "integer"), ("latency_ms", "float8"), ("error_class", "varchar"),
    ("error", "text"), ("response_body", "text"),
)  # fmt: skip


def attempts_insert(cursor: Any, rows: list[tuple[Any, ...]]) -> dict[int, int]:
    """Insert a batch of attempts, one row per delivery holding the fields of
    `ATTEMPT_COLUMNS`, datetimes adapted; the new attempts' ids by delivery id."""
    names = ", ".join(_column(DeliveryAttempt, field) for field, _ in ATTEMPT_COLUMNS)
    values = ", ".join(f"v.column{i}" for i in range(1, len(ATTEMPT_COLUMNS) + 1))
    source, params = rows_sql(ATTEMPT_COLUMNS, rows)
    cursor.execute(
        f"INSERT INTO {_table(DeliveryAttempt)} ({names}) SELECT {values} FROM {source}"
        f" RETURNING {_column(DeliveryAttempt, 'id')}, {_column(DeliveryAttempt, 'delivery')}",
        params,
    )
    return {delivery_id: pk for pk, delivery_id in cursor.fetchall()}


def webhook_counters_add(
    cursor: Any,
    webhook_id: int,
    *,
    delivered: int,
    failed: int,
    last_status: str,
    now: Any,
    event_successes: int = 0,
    event_failures: int = 0,
) -> None:
    """Count a batch's final outcomes on its webhook and note its last delivery; and
    (H-state) follow its run of failed event attempts in the same statement: a success ends
    the run, a failed attempt starts (`failing_since`) or extends it."""
    done, bad = _column(Webhook, "delivered_count"), _column(Webhook, "failed_count")
    run, since = _column(Webhook, "consecutive_failures"), _column(Webhook, "failing_since")
    cursor.execute(
        f"UPDATE {_table(Webhook)} SET {done} = {done} + %(delivered)s,"
        f" {bad} = {bad} + %(failed)s, {_column(Webhook, 'last_status')} = %(status)s,"
        f" {_column(Webhook, 'last_delivery_at')} = %(now)s,"
        f" {run} = CASE WHEN %(ok)s > 0 THEN 0 ELSE {run} + %(ko)s END,"
        f" {since} = CASE WHEN %(ok)s > 0 THEN NULL"
        f" WHEN %(ko)s > 0 THEN COALESCE({since}, %(now)s) ELSE {since} END"
        f" WHERE {_column(Webhook, 'id')} = %(webhook)s",
        {
            "delivered": delivered,
            "failed": failed,
            "status": last_status,
            "now": now,
            "webhook": webhook_id,
            "ok": event_successes,
            "ko": event_failures,
        },
    )
