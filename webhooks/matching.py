"""Webhook conditions: validated when saved, compiled once per batch, matched per record.

A condition is `{field, operator, value}` on any CDR field. Validation makes every value
usable (numbers are numbers, regexes compile, lists are lists), so matching never fails.
Compilation turns a webhook's conditions into one plain-Python predicate over a parsed row
(a list of strings in the file's column order), using the file's own column positions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from operator import itemgetter
from typing import Any

from cdr.fields import CDR_BY_NAME, CDR_FIELDS, FieldSpec

MAX_REGEX_LENGTH = 500
MAX_LIST_ITEMS = 1000

TEXT_OPERATORS = (
    "eq", "ne", "in", "not_in", "contains", "not_contains", "startswith", "endswith", "regex",
    "is_empty", "is_not_empty",
)  # fmt: skip
NUMBER_OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "is_empty",
    "is_not_empty",
)
ALL_OPERATORS = tuple(dict.fromkeys(TEXT_OPERATORS + NUMBER_OPERATORS))
LIST_OPERATORS = ("in", "not_in")
VALUELESS_OPERATORS = ("is_empty", "is_not_empty")

Row = Sequence[str]
Predicate = Callable[[str], bool]


class ConditionError(ValueError):
    """A condition that cannot be saved; `errors` maps field/operator/value to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def field_kind(spec: FieldSpec) -> str:
    if spec.name.startswith("dateTime"):
        return "time"
    return "number" if spec.is_integer else "text"


def operators_for(spec: FieldSpec) -> tuple[str, ...]:
    return TEXT_OPERATORS if field_kind(spec) == "text" else NUMBER_OPERATORS


def field_spec(name: str) -> FieldSpec:
    spec = CDR_BY_NAME.get(str(name).strip().lower())
    if spec is None:
        valid = ", ".join(f.name for f in CDR_FIELDS)
        raise ConditionError({"field": f"unknown CDR field {name!r}; valid fields: {valid}"})
    return spec


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated condition: canonical field name, operator, normalised value."""

    field: str
    operator: str
    value: Any  # str | int | tuple of those | None


def _number(raw: object, kind: str) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    if kind == "time":
        if text.lower() == "never":
            return 0
        if not re.fullmatch(r"-?\d+", text):
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{text!r} is neither epoch seconds, ISO-8601 nor Never") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp())
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _items(raw: object) -> list[object]:
    if isinstance(raw, list | tuple):
        items = list(raw)
    elif isinstance(raw, str):
        items = [part.strip() for part in raw.split(",")]
    else:
        items = [raw]
    items = [item for item in items if item != ""]
    if not items:
        raise ValueError("give at least one value, as a list or comma-separated text")
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"at most {MAX_LIST_ITEMS} values")
    return items


def validate_condition(field: object, operator: object, value: object) -> Rule:
    """Check one condition and return it normalised, or raise ConditionError."""
    spec = field_spec(str(field))
    kind = field_kind(spec)
    allowed = operators_for(spec)
    if operator not in ALL_OPERATORS:
        raise ConditionError(
            {"operator": f"unknown operator {operator!r}; use one of {', '.join(ALL_OPERATORS)}"}
        )
    if operator not in allowed:
        what = "text" if kind == "text" else "a number"
        choices = ", ".join(allowed)
        message = f"{operator} does not apply to {spec.name}, which is {what}; use one of {choices}"
        raise ConditionError({"operator": message})
    try:
        normalised = _normalise(str(operator), value, kind)
    except ValueError as exc:
        raise ConditionError({"value": str(exc)}) from None
    return Rule(spec.name, str(operator), normalised)


def _normalise(operator: str, value: object, kind: str) -> Any:
    if operator in VALUELESS_OPERATORS:
        return None
    if value is None or (isinstance(value, dict)):
        raise ValueError("a value is required")
    if operator in LIST_OPERATORS:
        items = _items(value)
        if kind == "text":
            return tuple(str(item) for item in items)
        return tuple(_number(item, kind) for item in items)
    if isinstance(value, list):
        raise ValueError(f"{operator} takes one value, not a list")
    if kind != "text":
        return _number(value, kind)
    text = str(value)
    if operator == "regex":
        if len(text) > MAX_REGEX_LENGTH:
            raise ValueError(f"regular expression longer than {MAX_REGEX_LENGTH} characters")
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    elif operator != "eq" and operator != "ne" and text == "":
        raise ValueError("a value is required")
    return text


def _number_predicate(operator: str, value: Any, kind: str) -> Predicate:
    if operator in ("eq", "ne", "in", "not_in"):
        wanted = value if isinstance(value, tuple) else (value,)
        texts = {str(n) for n in wanted}
        if kind == "time" and 0 in wanted:
            texts.add("")  # an empty time and 0 both mean "never"
        texts_frozen = frozenset(texts)
        if operator in ("eq", "in"):
            return texts_frozen.__contains__
        return lambda v: v not in texts_frozen
    if operator == "gt":
        return lambda v: v != "" and int(v) > value
    if operator == "gte":
        return lambda v: v != "" and int(v) >= value
    if operator == "lt":
        return lambda v: v != "" and int(v) < value
    if operator == "lte":
        return lambda v: v != "" and int(v) <= value
    raise AssertionError(operator)


def _text_predicate(operator: str, value: Any) -> Predicate:
    if operator == "eq":
        return value.__eq__
    if operator == "ne":
        return value.__ne__
    if operator == "in":
        return frozenset(value).__contains__
    if operator == "not_in":
        excluded = frozenset(value)
        return lambda v: v not in excluded
    if operator == "contains":
        return lambda v: value in v
    if operator == "not_contains":
        return lambda v: value not in v
    if operator == "startswith":
        return lambda v: v.startswith(value)
    if operator == "endswith":
        return lambda v: v.endswith(value)
    if operator == "regex":
        search = re.compile(value).search
        return lambda v: search(v) is not None
    raise AssertionError(operator)


def predicate(rule: Rule) -> Predicate:
    if rule.operator == "is_empty":
        return "".__eq__
    if rule.operator == "is_not_empty":
        return "".__ne__
    kind = field_kind(CDR_BY_NAME[rule.field.lower()])
    if kind == "text":
        return _text_predicate(rule.operator, rule.value)
    return _number_predicate(rule.operator, rule.value, kind)


class Matcher:
    """The AND of one webhook's rules over rows laid out as the file's `index` says.

    Call it on one row, or give many to `match_batch`, which decides a whole batch at once.
    """

    __slots__ = ("_call", "checks", "never")

    def __init__(self, checks: tuple[tuple[int, Rule, Predicate], ...], never: bool) -> None:
        self.checks = checks
        self.never = never
        self._call = _single_row(checks, never)

    def __call__(self, row: Row) -> bool:
        return self._call(row)


def _single_row(
    checks: tuple[tuple[int, Rule, Predicate], ...], never: bool
) -> Callable[[Row], bool]:
    if never:
        return lambda row: False
    if not checks:
        return lambda row: True
    if len(checks) == 1:
        ((position, _, test),) = checks
        return lambda row: test(row[position])
    pairs = tuple((position, test) for position, _, test in checks)

    def match(row: Row) -> bool:
        for position, test in pairs:
            if not test(row[position]):
                return False
        return True

    return match


def compile_rules(rules: Iterable[Rule], index: dict[str, int]) -> Matcher:
    """One predicate for all rules (AND) over rows laid out as `index` says.

    A field the file does not have reads as empty; such a rule is decided once, here.
    """
    checks: list[tuple[int, Rule, Predicate]] = []
    for rule in rules:
        test = predicate(rule)
        position = index.get(rule.field)
        if position is None:
            if test(""):
                continue
            return Matcher((), never=True)
        checks.append((position, rule, test))
    return Matcher(tuple(checks), never=False)


def match_batch(matchers: Sequence[Matcher], rows: Sequence[Row]) -> list[list[int]]:
    """For each matcher, the indexes of the rows it matches, ascending.

    The same answers as calling every matcher on every row, at a fraction of the cost when
    many webhooks look at one batch. CDR columns repeat (devices, causes, numbers,
    durations), so each distinct rule is decided once per distinct value of its column and
    shared by every webhook that has it. A webhook then starts from the rows of its most
    selective rule (counted from the column's value counts) and keeps those that pass its
    other rules — looked up in their sets of passing values, in C-level iterators.
    """
    n = len(rows)
    columns: dict[int, tuple[list[str], Counter[str]]] = {}
    passing: dict[tuple[int, Rule], tuple[frozenset[str], int]] = {}
    first_rows: dict[tuple[int, Rule], list[int]] = {}
    every = list(range(n))
    found: list[list[int]] = []
    for matcher in matchers:
        if matcher.never:
            found.append([])
            continue
        decided = []
        for position, rule, test in matcher.checks:
            key = (position, rule)
            entry = passing.get(key)
            if entry is None:
                column = columns.get(position)
                if column is None:
                    values = list(map(itemgetter(position), rows))
                    column = columns[position] = (values, Counter(values))
                counts = column[1]
                ok = frozenset(filter(test, counts))
                entry = passing[key] = (ok, sum(map(counts.__getitem__, ok)))
            decided.append((entry[1], key, entry[0], position))
        if not decided:
            found.append(every[:])
            continue
        decided.sort(key=itemgetter(0))
        _, key, ok, position = decided[0]
        shared = first_rows.get(key)
        if shared is None:
            values = columns[position][0]
            shared = first_rows[key] = list(compress(every, map(ok.__contains__, values)))
        selected = shared[:]  # the first rule's rows are shared by webhooks that start alike
        for _, _, ok, position in decided[1:]:
            if not selected:
                break
            values = columns[position][0]
            selected = list(
                compress(selected, map(ok.__contains__, map(values.__getitem__, selected)))
            )
        found.append(selected)
    return found


def rules_from(conditions: Iterable[tuple[str, str, object]]) -> list[Rule]:
    return [validate_condition(f, op, value) for f, op, value in conditions]
