"""A delivery's life has one home: webhooks/lifecycle.py writes every status, no one else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The ORM calls that write the columns they are given as keywords.
WRITES = {"update", "create", "bulk_create", "get_or_create", "update_or_create", "Delivery"}
STATUS_SQL = re.compile(r"(UPDATE|INSERT INTO)\s+webhooks_delivery\b.*\bstatus\b", re.S | re.I)


def status_writes(path: Path) -> list[str]:
    """Where `path` writes a delivery's status: a `status=` keyword to an ORM write, or SQL
    that updates or inserts webhooks_delivery's status column."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in WRITES and any(k.arg == "status" for k in node.keywords):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if STATUS_SQL.search(node.value):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_only_the_lifecycle_module_writes_a_delivery_status() -> None:
    paths = [*sorted((ROOT / "webhooks").glob("*.py")), ROOT / "calltelemetry" / "retention.py"]
    writers = [w for p in paths if p.name != "lifecycle.py" for w in status_writes(p)]
    assert writers == []
    assert status_writes(ROOT / "webhooks" / "lifecycle.py")  # the check sees real writes
