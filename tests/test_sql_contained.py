"""Raw SQL contained (issue 12, item 6): each app's hand-written SQL lives in its `sql` module.

Every module of the project's packages is read with `ast`: outside `*/sql.py` and the
migrations nothing runs a statement of its own, and the `sql` modules take table names from
the models' metadata, so a table renamed in `Meta.db_table` is the table they use.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdr import sql as cdr_sql
from cdr.models import Cdr
from tests.conftest import ROOT
from tests.test_dependencies import MAY_IMPORT
from webhooks import sql as webhooks_sql
from webhooks.models import Condition, Webhook

# Calls that hand SQL text to the database: on a cursor (`execute`, psycopg's `copy`), a
# manager (`raw`), a queryset (`extra`), or an ORM expression (`RawSQL`).
RUNS_SQL = {"execute", "executemany", "copy", "raw", "extra"}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in relative:
                yield relative, ast.parse(path.read_text(), relative)


def is_sql_module(relative: str) -> bool:
    return Path(relative).name == "sql.py"


def sql_calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in RUNS_SQL:
            # `dict.copy()` and friends take no argument; a statement is always passed.
            if node.args or node.keywords:
                yield node.lineno, func.attr
        elif isinstance(func, ast.Name) and func.id == "RawSQL":
            yield node.lineno, func.id


def test_only_the_sql_modules_run_hand_written_sql() -> None:
    found = [
        f"{relative}:{line} calls {name}"
        for relative, tree in modules()
        if not is_sql_module(relative)
        for line, name in sql_calls(tree)
    ]
    assert found == []


def test_the_check_sees_the_calls_it_looks_for() -> None:
    calls = [
        name
        for relative, tree in modules()
        if is_sql_module(relative)
        for _line, name in sql_calls(tree)
    ]
    assert {"execute", "copy"} <= set(calls)


def test_the_sql_modules_name_no_table_literally() -> None:
    """Table names come from `_meta.db_table`: no string in a `sql` module spells one."""
    tables = {
        model._meta.db_table
        for name in MAY_IMPORT
        if apps.is_installed(name)
        for model in apps.get_app_config(name).get_models()
    }
    assert {"cdr_cdr", "webhooks_delivery", "webhooks_webhook"} <= tables
    found = [
        f"{relative}:{node.lineno} {node.value!r}"
        for relative, tree in modules()
        if is_sql_module(relative)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if any(table in node.value for table in tables)
    ]
    assert found == []


@pytest.mark.django_db
def test_the_sql_modules_use_the_table_the_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cdr, Webhook and Condition renamed in their metadata: the statements read the new
    names (views of the real tables, made by the test)."""
    Webhook.objects.create(name="w", url="http://192.0.2.1/hook")
    names = {Cdr: "renamed_cdr", Webhook: "renamed_webhook", Condition: "renamed_condition"}
    q = connection.ops.quote_name
    with connection.cursor() as cursor:  # the test's own DDL, rolled back with the test
        for model, name in names.items():
            cursor.execute(f"CREATE VIEW {q(name)} AS SELECT * FROM {q(model._meta.db_table)}")
    for model, name in names.items():
        monkeypatch.setattr(model._meta, "db_table", name)
    with CaptureQueriesContext(connection) as queries:
        version = webhooks_sql.webhooks_version()
        rows = cdr_sql.cdrs_read([1, 2])
    assert (version[0], version[2], rows) == (1, 0, [])
    text = " ".join(query["sql"] for query in queries.captured_queries)
    assert all(name in text for name in names.values())
    assert "webhooks_webhook" not in text and "cdr_cdr" not in text
