"""Conditions of call-scope webhooks: the `call.*` fields, and plain CDR fields over legs.

A call-scope webhook's conditions are AND-ed like a record webhook's. A `call.*` condition
reads one fact of the settled call (`cdr.models.Call`); a condition on a plain CDR field
holds when at least one of the call's legs satisfies it, each condition on its own (two
conditions may be met by two different legs). A fact the call does not have (NULL: no
MOS reported, never answered so no ring time) fails every condition but `is_empty`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdr.parsing import split_line
from webhooks.matching import (
    ALL_OPERATORS,
    LIST_OPERATORS,
    NUMBER_OPERATORS,
    TEXT_OPERATORS,
    VALUELESS_OPERATORS,
    ConditionError,
    Matcher,
    Rule,
    _items,
    _normalise,
    _text_predicate,
    compile_rules,
    validate_condition,
)

CALL_PREFIX = "call."
BOOLEAN_OPERATORS = ("eq",)


@dataclass(frozen=True, slots=True)
class CallFieldSpec:
    """A `call.*` condition field: its public name, the `Call` attribute it reads, how
    conditions compare it (boolean, integer, decimal or text) and what it means."""

    name: str
    attr: str
    kind: str
    description: str

    @property
    def type(self) -> str:
        """The type as the field catalogue names it, beside the CDR fields' CUCM types."""
        return {"boolean": "BOOLEAN", "integer": "INTEGER", "decimal": "DECIMAL"}.get(
            self.kind, "TEXT"
        )

    @property
    def comparison(self) -> str:
        """How conditions compare it: boolean, number or text (a CDR field's `field_kind`)."""
        return "number" if self.kind in ("integer", "decimal") else self.kind

    @property
    def operators(self) -> tuple[str, ...]:
        if self.kind == "boolean":
            return BOOLEAN_OPERATORS
        return TEXT_OPERATORS if self.kind == "text" else NUMBER_OPERATORS


CALL_FIELDS: tuple[CallFieldSpec, ...] = tuple(
    CallFieldSpec(*row)
    for row in (
        (
            "call.answered",
            "answered",
            "boolean",
            "a person answered: some leg connected to other than voicemail",
        ),
        (
            "call.missed",
            "missed",
            "boolean",
            "never answered by a person: no leg connected, or only voicemail did",
        ),
        ("call.voicemail", "voicemail", "boolean", "a leg reached a VOICEMAIL_NUMBERS number"),
        (
            "call.transferred",
            "transferred",
            "boolean",
            "a leg ended or joined on behalf of a transfer (OnBehalfOf 10)",
        ),
        (
            "call.forwarded",
            "forwarded",
            "boolean",
            "a leg was redirected by a forward (redirect reason)",
        ),
        (
            "call.conference",
            "conference",
            "boolean",
            "a leg joined or ended on behalf of a conference (OnBehalfOf 4)",
        ),
        ("call.legs", "legs", "integer", "number of CDRs (legs) of the call"),
        (
            "call.duration",
            "duration",
            "integer",
            "seconds from the first connect to the last disconnect, 0 if never answered",
        ),
        (
            "call.ringSeconds",
            "ring_seconds",
            "integer",
            "seconds from origination to the first connect; empty if never answered",
        ),
        ("call.caller", "caller", "text", "calling party number of the first leg"),
        ("call.dialed", "dialed", "text", "original called party number of the first leg"),
        ("call.answeredBy", "answered_by", "text", "number that answered, empty if none"),
        (
            "call.cause",
            "cause",
            "integer",
            "the cause value that ended the call (Q.850, e.g. 16 normal clearing)",
        ),
        (
            "call.mosMin",
            "mos_min",
            "decimal",
            "lowest MOS of any endpoint (MLQKmn, else MLQKav, else MLQK); empty when none reported",
        ),
        (
            "call.jitterMax",
            "jitter_max",
            "integer",
            "highest jitter any endpoint reported, ms; empty without CMRs",
        ),
        (
            "call.lossPct",
            "loss_pct",
            "decimal",
            "packets lost / packets expected over all CMRs, %; empty without CMRs",
        ),
    )
)
CALL_BY_NAME: dict[str, CallFieldSpec] = {spec.name.lower(): spec for spec in CALL_FIELDS}
# The Call columns the call.* conditions read, for one query per batch of calls.
FACT_COLUMNS: tuple[str, ...] = tuple(spec.attr for spec in CALL_FIELDS)

Facts = Mapping[str, Any]
FactTest = Callable[[Any], bool]


def is_call_field(name: object) -> bool:
    return str(name).strip().lower().startswith(CALL_PREFIX)


def call_field_spec(name: str) -> CallFieldSpec:
    spec = CALL_BY_NAME.get(str(name).strip().lower())
    if spec is None:
        valid = ", ".join(f.name for f in CALL_FIELDS)
        raise ConditionError({"field": f"unknown call field {name!r}; valid call fields: {valid}"})
    return spec


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in ("true", "false"):
        return text == "true"
    raise ValueError("give true or false")


_DECIMAL = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


def _decimal(value: object) -> int | float:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    number = float(text)
    return int(number) if number.is_integer() and "." not in text else number


def validate_call_condition(field: object, operator: object, value: object) -> Rule:
    """Check one `call.*` condition and return it normalised, or raise ConditionError."""
    spec = call_field_spec(str(field))
    if operator not in ALL_OPERATORS:
        raise ConditionError(
            {"operator": f"unknown operator {operator!r}; use one of {', '.join(ALL_OPERATORS)}"}
        )
    if operator not in spec.operators:
        what = {"boolean": "true or false", "text": "text"}.get(spec.kind, "a number")
        message = (
            f"{operator} does not apply to {spec.name}, which is {what}; "
            f"use one of {', '.join(spec.operators)}"
        )
        raise ConditionError({"operator": message})
    try:
        if spec.kind == "boolean":
            normalised: Any = _boolean(value)
        elif spec.kind == "decimal" and operator not in VALUELESS_OPERATORS:
            if value is None or isinstance(value, dict):
                raise ValueError("a value is required")
            if operator in LIST_OPERATORS:
                normalised = tuple(_decimal(item) for item in _items(value))
            elif isinstance(value, list):
                raise ValueError(f"{operator} takes one value, not a list")
            else:
                normalised = _decimal(value)
        else:
            normalised = _normalise(
                str(operator), value, "text" if spec.kind == "text" else "number"
            )
    except ValueError as exc:
        raise ConditionError({"value": str(exc)}) from None
    return Rule(spec.name, str(operator), normalised)


def scoped_condition(field: object, operator: object, value: object, *, scope: str) -> Rule:
    """Validate a condition for a webhook of `scope`: a call field only in call scope."""
    if is_call_field(field):
        if scope != "call":
            raise ConditionError(
                {
                    "field": f"{str(field).strip()} is a call field: call.* conditions apply "
                    'to call-scope webhooks only (set scope to "call")'
                }
            )
        return validate_call_condition(field, operator, value)
    return validate_condition(field, operator, value)


def fact_test(rule: Rule) -> FactTest:
    """A test of one `call.*` rule over the fact's Python value (None: the call has none)."""
    kind = CALL_BY_NAME[rule.field.lower()].kind
    operator, wanted = rule.operator, rule.value
    if operator == "is_empty":
        return lambda v: v is None or v == ""
    if operator == "is_not_empty":
        return lambda v: v is not None and v != ""
    if kind == "boolean":
        return lambda v: v is not None and bool(v) is wanted
    if kind == "text":
        text_test = _text_predicate(operator, wanted)
        return lambda v: v is not None and text_test(v)
    test: Callable[[Any], bool]
    if operator in ("eq", "in"):
        values = frozenset(wanted if isinstance(wanted, tuple) else (wanted,))
        test = values.__contains__
    elif operator in ("ne", "not_in"):
        excluded = frozenset(wanted if isinstance(wanted, tuple) else (wanted,))
        test = lambda v: v not in excluded  # noqa: E731
    elif operator == "gt":
        test = lambda v: v > wanted  # noqa: E731
    elif operator == "gte":
        test = lambda v: v >= wanted  # noqa: E731
    elif operator == "lt":
        test = lambda v: v < wanted  # noqa: E731
    elif operator == "lte":
        test = lambda v: v <= wanted  # noqa: E731
    else:
        raise AssertionError(operator)
    return lambda v: v is not None and test(v)


@dataclass(frozen=True, slots=True)
class Leg:
    """One CDR of a call as the conditions read it: its header layout and its raw line."""

    layout_id: int
    raw: str


class LegRules:
    """Plain CDR rules over legs of any header layout: each rule compiled once per layout
    (a field the layout lacks reads as empty, as in record scope) and each line split once."""

    def __init__(self, layouts: Mapping[int, Sequence[str]]) -> None:
        self.layouts = layouts
        self.compiled: dict[tuple[Rule, int], Matcher] = {}
        self.split: dict[str, list[str]] = {}

    def any_leg(self, rule: Rule, legs: Iterable[Leg]) -> bool:
        for leg in legs:
            names = self.layouts[leg.layout_id]
            match = self.compiled.get((rule, leg.layout_id))
            if match is None:
                index = {name: position for position, name in enumerate(names)}
                match = self.compiled[(rule, leg.layout_id)] = compile_rules([rule], index)
            values = self.split.get(leg.raw)
            if values is None:
                values = split_line(leg.raw)
                if len(values) < len(names):  # a short line: its missing fields are empty
                    values += [""] * (len(names) - len(values))
                self.split[leg.raw] = values
            if match(values):
                return True
        return False


class CallRules:
    """One call-scope webhook's conditions, compiled: the call facts' tests and the plain
    CDR rules that at least one leg must satisfy."""

    __slots__ = ("facts", "plain")

    def __init__(self, rules: Iterable[Rule]) -> None:
        facts: list[tuple[str, FactTest]] = []
        plain: list[Rule] = []
        for rule in rules:
            if is_call_field(rule.field):
                facts.append((CALL_BY_NAME[rule.field.lower()].attr, fact_test(rule)))
            else:
                plain.append(rule)
        self.facts = tuple(facts)
        self.plain = tuple(plain)

    def matches(self, facts: Facts, legs: Sequence[Leg], leg_rules: LegRules) -> bool:
        for attr, test in self.facts:
            if not test(facts[attr]):
                return False
        return all(leg_rules.any_leg(rule, legs) for rule in self.plain)
