"""Webhook conditions: validated when saved, compiled once per batch, matched per record.

A condition is `{field, operator, value}` on any CDR field. Validation makes every value
usable (numbers are numbers, regexes compile, lists are lists), so matching never fails.

Regular expressions run on RE2, whose matching time is linear in the value: a pattern such
as `(a+)+$` cannot hang ingest, where matching runs. RE2 has no back-references or
look-around, which are refused on save with the construct named.
Compilation turns a webhook's conditions into one plain-Python predicate over a parsed row
(a list of strings in the file's column order), using the file's own column positions.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate, chain, compress
from operator import itemgetter
from typing import Any

import re2

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

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the message goes to the operator, not to stderr


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
        problem = regex_problem(text)
        if problem:
            raise ValueError(f"invalid regular expression: {problem}")
    elif operator != "eq" and operator != "ne" and text == "":
        raise ValueError("a value is required")
    return text


def _regex(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, _RE2_OPTIONS)


# RE2's messages name the construct; these say why it is not there.
_UNSUPPORTED = (
    (re.compile(r"invalid escape sequence: \\[1-9]"), "back-references are not supported"),
    (
        re.compile(r"invalid perl operator: \(\?(P|[=!<])"),
        "look-around and back-references are not supported",
    ),
)


def regex_problem(pattern: str) -> str | None:
    """Why RE2 refuses `pattern` (its message names the construct), or None."""
    try:
        _regex(pattern)
    except re2.error as exc:
        message = exc.args[0] if exc.args else str(exc)
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        for known, why in _UNSUPPORTED:
            if known.match(message):
                return f"{message} ({why})"
        return message
    return None


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
        if regex_problem(value):
            # Saved before RE2 checked patterns (a back-reference, a look-around): refused
            # now, it matches nothing rather than stop ingest.
            return lambda v: False
        # A one-pattern set: one call into RE2 per value, where a compiled pattern's search
        # builds a match object in Python (ten times the cost; this is the hot path).
        patterns = re2.Set.SearchSet(_RE2_OPTIONS)
        patterns.Add(value)
        patterns.Compile()
        found = patterns.Match
        return lambda v: found(v) is not None
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

    __slots__ = ("_call", "checks", "never", "shares")

    def __init__(self, checks: tuple[tuple[int, Rule, Predicate], ...], never: bool) -> None:
        self.checks = checks
        self.never = never
        self._call = _single_row(checks, never)
        # Per check, the share of rows it let through in the batches seen so far (None: not
        # known yet); `match_batch` starts from the most selective. Only speed depends on it.
        self.shares: list[float | None] = [None] * len(checks)

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


COMPARISONS = ("gt", "gte", "lt", "lte")


def match_batch(matchers: Sequence[Matcher], rows: Sequence[Row]) -> list[list[int]]:
    """For each matcher, the indexes of the rows it matches, ascending.

    The same answers as calling every matcher on every row, at a fraction of the cost when
    many webhooks look at one batch. CDR columns repeat (devices, causes, numbers,
    durations), so a rule is decided once per distinct value of its column and shared by
    every webhook that has it; a comparison (`duration gt 300`) is a slice of the column's
    values sorted by number. A webhook starts from the rows of its most selective rule (as
    its earlier batches measured; a rule not measured yet is decided over the whole column
    first), found through the column's value → rows index when they are few, and keeps
    those that pass its other rules, each decided only for the values those rows hold.
    The loops over rows are C-level iterators.
    """
    n = len(rows)
    batch = _Batch(rows)
    found: list[list[int]] = []
    for matcher in matchers:
        checks, shares = matcher.checks, matcher.shares
        if matcher.never or not n:
            found.append([])
            continue
        if not checks:
            found.append(list(range(n)))
            continue
        for k, share in enumerate(shares):
            if share is None:
                position, rule, test = checks[k]
                shares[k] = batch.passing(position, rule, test)[1] / n
        order = sorted(range(len(checks)), key=shares.__getitem__)  # type: ignore[arg-type]
        position, rule, test = checks[order[0]]
        ok, count = batch.passing(position, rule, test)
        shares[order[0]] = count / n
        selected = batch.rows_with(position, rule, ok, count)[:]  # shared: copy
        for k in order[1:]:
            if not selected:
                break
            position, rule, test = checks[k]
            held = list(map(batch.column(position).__getitem__, selected))
            decided = batch.decided.get((position, rule))
            if decided is not None:  # decided whole for another webhook: its share is free
                ok, count = decided
                shares[k] = count / n
            else:
                ok = batch.passing_among(position, rule, test, held)
            selected = list(compress(selected, map(ok.__contains__, held)))
        found.append(selected)
    return found


class _Batch:
    """One batch's columns, built when a rule first needs them: the values, their counts,
    the numbers sorted (for comparisons), the rows of each value (for selective rules), and
    what each rule decided."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        self.columns: dict[int, list[str]] = {}
        self.counts: dict[int, Counter[str]] = {}
        self.numbers: dict[int, tuple[list[int], list[str], list[int]] | None] = {}
        self.where: dict[int, dict[str, list[int]]] = {}
        self.decided: dict[tuple[int, Rule], tuple[frozenset[str], int]] = {}
        self.partly: dict[tuple[int, Rule], tuple[set[str], set[str]]] = {}
        self.first_rows: dict[tuple[int, Rule], list[int]] = {}

    def column(self, position: int) -> list[str]:
        values = self.columns.get(position)
        if values is None:
            values = self.columns[position] = list(map(itemgetter(position), self.rows))
        return values

    def passing(self, position: int, rule: Rule, test: Predicate) -> tuple[frozenset[str], int]:
        """The column's values that pass the rule, and how many rows hold one."""
        key = (position, rule)
        decided = self.decided.get(key)
        if decided is None:
            decided = self.decided[key] = self._decide(position, rule, test)
        return decided

    def _decide(self, position: int, rule: Rule, test: Predicate) -> tuple[frozenset[str], int]:
        counts = self.counts.get(position)
        if counts is None:
            counts = self.counts[position] = Counter(self.column(position))
        if rule.operator in COMPARISONS:
            ordered = self._numbers(position, counts)
            if ordered is not None:
                return _comparison(rule, *ordered)
        ok = frozenset(filter(test, counts))
        return ok, sum(map(counts.__getitem__, ok))

    def passing_among(
        self, position: int, rule: Rule, test: Predicate, values: list[str]
    ) -> set[str]:
        """A set holding, of `values`, those that pass the rule (and maybe others that do):
        each distinct value is tested once per batch, whichever webhook asks."""
        partly = self.partly.get((position, rule))
        if partly is None:
            partly = self.partly[(position, rule)] = (set(), set())
        seen, ok = partly
        new = set(values)
        new -= seen
        if new:
            seen |= new
            ok.update(filter(test, new))
        return ok

    def _numbers(
        self, position: int, counts: Counter[str]
    ) -> tuple[list[int], list[str], list[int]] | None:
        """The column's non-empty values sorted by number, as numbers, as text, and the
        running count of rows up to each (None if one is not a number: the parser lets
        none through, but then the rule's own test decides, and says what is wrong)."""
        if position not in self.numbers:
            try:
                pairs = sorted((int(v), v) for v in counts if v != "")
            except ValueError:
                self.numbers[position] = None
            else:
                texts = [text for _, text in pairs]
                self.numbers[position] = (
                    [number for number, _ in pairs],
                    texts,
                    [0, *accumulate(map(counts.__getitem__, texts))],
                )
        return self.numbers[position]

    def rows_with(self, position: int, rule: Rule, ok: frozenset[str], count: int) -> list[int]:
        """The rows (ascending) whose value in the column passes the rule (`ok`, `count`),
        shared by the webhooks that start from the same rule."""
        rows = self.first_rows.get((position, rule))
        if rows is not None:
            return rows
        values = self.column(position)
        if count * 4 > len(values):  # most rows: one pass over the column
            rows = list(compress(range(len(values)), map(ok.__contains__, values)))
        else:
            where = self.where.get(position)
            if where is None:
                where = self.where[position] = {}
                for i, value in enumerate(values):
                    held = where.get(value)
                    if held is None:
                        where[value] = [i]
                    else:
                        held.append(i)
            rows = sorted(chain.from_iterable(map(where.__getitem__, ok)))
        self.first_rows[(position, rule)] = rows
        return rows


def _comparison(
    rule: Rule, numbers: list[int], texts: list[str], running: list[int]
) -> tuple[frozenset[str], int]:
    """A comparison's passing values: a slice of the column's values sorted by number."""
    bound = rule.value
    if rule.operator == "gt":
        start, stop = bisect_right(numbers, bound), len(numbers)
    elif rule.operator == "gte":
        start, stop = bisect_left(numbers, bound), len(numbers)
    elif rule.operator == "lt":
        start, stop = 0, bisect_left(numbers, bound)
    else:  # lte
        start, stop = 0, bisect_right(numbers, bound)
    return frozenset(texts[start:stop]), running[stop] - running[start]
