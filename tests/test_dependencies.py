"""Dependencies point one way: calltelemetry ← cdr ← webhooks, licensing, sftp (STYLE.md).

Every import of every module of the project's packages is read with `ast`, those inside
functions too, so the rule stays true as code moves. Ingest tells webhooks about stored
batches only through `cdr.contracts`, whose names the webhooks' statement tail must use.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from cdr.contracts import StatementTail, StoredCte, StoredRecord, batch_listener
from cdr.models import Cdr, CdrFile
from cdr.parsing import Layout, Row
from cdr.services import cdr_file_ingest, file_dry_run
from tests.conftest import ROOT
from tests.test_parsing import cdr_row, cdr_text
from webhooks.models import Webhook
from webhooks.trigger import WebhookTrigger

# What each package may import from the other packages of the project.
MAY_IMPORT: dict[str, set[str]] = {
    "calltelemetry": set(),  # the project shell: settings, schema helpers, health, metrics
    "cdr": {"calltelemetry"},  # records, files, parsing, storage
    "licensing": {"calltelemetry", "cdr"},
    "sftp": {"calltelemetry", "cdr"},
    "webhooks": {"calltelemetry", "cdr", "licensing"},  # webhooks are a licensed feature
}
# The composition root wires the apps together; no app imports it (see its docstring).
COMPOSITION_ROOT = {"calltelemetry/api_urls.py", "calltelemetry/retention.py"}


def imports() -> Iterator[tuple[str, int, str]]:
    """(file relative to the repository, line, imported module) for every import."""
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), relative)):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield relative, node.lineno, alias.name
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield relative, node.lineno, node.module
                    for alias in node.names:  # `from cdr import views`
                        yield relative, node.lineno, f"{node.module}.{alias.name}"


def cross_imports() -> Iterator[tuple[str, int, str, str, str]]:
    """(file, line, module, importing package, imported package) across packages."""
    for relative, line, module in imports():
        own, other = relative.split("/")[0], module.split(".")[0]
        if other in MAY_IMPORT and other != own:
            yield relative, line, module, own, other


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{relative}:{line} imports {module}"
        for relative, line, module, own, other in cross_imports()
        if other not in MAY_IMPORT[own] and relative not in COMPOSITION_ROOT
    ]
    assert wrong == []


def test_cdr_imports_nothing_from_the_apps_above_it_not_even_in_a_function() -> None:
    above = re.compile(r"^\s*(from|import) (webhooks|licensing|sftp)")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "cdr").rglob("*.py"))
        for n, text in enumerate(path.read_text().splitlines(), start=1)
        if above.match(text)
    ]
    assert found == []


def test_no_app_imports_another_apps_views() -> None:
    wrong = [
        f"{relative}:{line} imports {module}"
        for relative, line, module, _own, _other in cross_imports()
        if module.split(".")[1:2] == ["views"] and relative not in COMPOSITION_ROOT
    ]
    assert wrong == []


def test_the_packages_import_each_other_without_a_cycle() -> None:
    edges: dict[str, set[str]] = {package: set() for package in MAY_IMPORT}
    for relative, _line, _module, own, other in cross_imports():
        if relative not in COMPOSITION_ROOT:
            edges[own].add(other)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in edges[start]
        )

    assert [package for package in edges if reaches(package, package, set())] == []


def test_the_stored_cte_declares_columns_the_record_table_has() -> None:
    """Renaming a column the statement tail reads (Cdr.id, Cdr.line) fails here, not at run
    time in the middle of an ingest."""
    columns = {field.column for field in Cdr._meta.concrete_fields}
    assert StoredCte.COLUMNS == (StoredCte.ID, StoredCte.LINE)
    assert set(StoredCte.COLUMNS) <= columns


@pytest.fixture
def matching_batch(db: None, tmp_path: Path) -> tuple[Layout, list[Row]]:
    """An enabled webhook that matches every record, and a batch of two rows."""
    from cdr.parsing import CucmReader

    Webhook.objects.create(name="all", url="http://192.0.2.1/hook")
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"p1"'), cdr_row(pkid='"p2"')]))
    with path.open("rb") as stream:
        reader = CucmReader(stream)
        rows = [row for row in reader if isinstance(row, Row)]
    return reader.layout, rows


def tail_text(layout: Layout, rows: list[Row]) -> tuple[str, StatementTail]:
    listener = WebhookTrigger()
    listener.refresh(layout)
    with transaction.atomic():
        tail = listener.statement(layout, rows, listener.prepare(layout, rows))
    assert tail is not None
    return (tail.ctes + tail.select).as_string(connection.connection), tail


def test_the_webhook_tail_reads_the_stored_records_only_by_the_declared_names(
    matching_batch: tuple[Layout, list[Row]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tail names the CTE and its columns through `StoredCte` and binds its parameters
    by name: renamed in the contract, they are renamed in the tail."""
    if connection.vendor != "postgresql":
        pytest.skip("the statement tail is PostgreSQL's")
    text, tail = tail_text(*matching_batch)
    read = re.findall(r'"ins"\."(\w+)"', text) + re.findall(r'JOIN "ins" USING \("(\w+)"\)', text)
    assert set(read) == set(StoredCte.COLUMNS)
    assert "%s" not in text and all(name.startswith("wh_") for name in tail.params)
    assert set(re.findall(r"%\((\w+)\)s", text)) == set(tail.params)

    from psycopg import sql

    monkeypatch.setattr(StoredCte, "name", sql.Identifier("stored"))
    monkeypatch.setattr(StoredCte, "id", sql.Identifier("stored", "record_id"))
    monkeypatch.setattr(StoredCte, "line", sql.Identifier("stored", "file_line"))
    monkeypatch.setattr(StoredCte, "line_column", sql.Identifier("file_line"))
    renamed, _ = tail_text(*matching_batch)
    assert '"stored"."record_id"' in renamed and 'JOIN "stored" USING ("file_line")' in renamed
    assert '"ins"' not in renamed and '"line"' not in renamed


def test_webhooks_registers_its_batch_listener_with_ingest_when_the_app_is_ready() -> None:
    assert isinstance(batch_listener(), WebhookTrigger)


class Recorder:
    """A batch listener that notes what ingest and the dry run tell it."""

    in_statement = False

    def __init__(self) -> None:
        self.stored_pkids: list[str] = []
        self.asked_pkids: list[str] = []
        self.pkid_at = 0

    def refresh(self, layout: Layout) -> None:
        self.pkid_at = layout.index["pkid"]

    def prepare(self, layout: Layout, rows: Sequence[Row]) -> Any:
        return None

    def statement(self, layout: Layout, rows: Sequence[Row], prepared: Any) -> None:
        raise AssertionError("not in the statement")

    def stored(self, layout: Layout, stored: list[StoredRecord], prepared: Any) -> None:
        self.stored_pkids += [record.values[self.pkid_at] for record in stored]

    def dry_run(self, layout: Layout, rows: Sequence[Row]) -> Mapping[str, int]:
        self.asked_pkids += [row.values[self.pkid_at] for row in rows]
        return {"recorder": len(rows)}


@pytest.mark.django_db
def test_ingest_and_the_dry_run_tell_the_listener_about_new_records_only(tmp_path: Path) -> None:
    # The cluster column filled: an empty one is the dry run's own key drift (issue 12, 4).
    row = {"globalCallId_ClusterID": '"C"'}
    first = tmp_path / "cdr_C_01_202001010000_1"
    first.write_bytes(cdr_text([cdr_row(pkid='"p1"', **row)]))
    listener = Recorder()
    record = cdr_file_ingest(path=first, source="replay", on_stored=listener)
    assert record.status == CdrFile.Status.DONE and listener.stored_pkids == ["p1"]

    second = tmp_path / "cdr_C_01_202001010001_2"
    second.write_bytes(cdr_text([cdr_row(pkid='"p1"', **row), cdr_row(pkid='"p2"', **row)]))
    result = file_dry_run(path=second, listener=listener)
    assert (result.records, result.new) == (2, 1)
    assert listener.asked_pkids == ["p2"] and result.matches == {"recorder": 1}
    assert Cdr.objects.count() == 1
