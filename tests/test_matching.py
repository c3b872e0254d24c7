from __future__ import annotations

import pytest

from cdr.fields import header
from webhooks.matching import ConditionError, compile_rules, validate_condition

NAMES = header("cdr", 133)
INDEX = {name: i for i, name in enumerate(NAMES)}


def row(**values: str) -> list[str]:
    return [values.get(name, "") for name in NAMES]


def matches(conditions: list[tuple[str, str, object]], **values: str) -> bool:
    rules = [validate_condition(*c) for c in conditions]
    return compile_rules(rules, INDEX)(row(**values))


MISSED = {"dateTimeConnect": "0", "duration": "0", "finalCalledPartyNumber": "1000"}
ANSWERED = {"dateTimeConnect": "1699282650", "duration": "301", "finalCalledPartyNumber": "2000"}


@pytest.mark.parametrize(
    ("condition", "record", "expected"),
    [
        (("dateTimeConnect", "eq", "0"), MISSED, True),
        (("dateTimeConnect", "eq", "Never"), MISSED, True),
        (("dateTimeConnect", "eq", "never"), ANSWERED, False),
        (("dateTimeConnect", "ne", 0), ANSWERED, True),
        (("duration", "gt", 300), ANSWERED, True),
        (("duration", "gt", "300"), {"duration": "300"}, False),
        (("duration", "gte", "300"), {"duration": "300"}, True),
        (("duration", "lt", 5), MISSED, True),
        (("duration", "lte", 0), MISSED, True),
        (("duration", "gt", 5), {"duration": ""}, False),
        (("destCause_value", "in", [17, 1174405137]), {"destCause_value": "1174405137"}, True),
        (("destCause_value", "in", "17, 19"), {"destCause_value": "19"}, True),
        (("destCause_value", "not_in", "17,19"), {"destCause_value": "16"}, True),
        (("destCause_value", "eq", 4294967295), {"destCause_value": "4294967295"}, True),
        (
            ("dateTimeOrigination", "gte", "2023-11-06T14:57:22Z"),
            {"dateTimeOrigination": "1699282642"},
            True,
        ),
        (
            ("dateTimeOrigination", "gt", "2023-11-06T14:57:22+00:00"),
            {"dateTimeOrigination": "1699282642"},
            False,
        ),
        (("dateTimeOrigination", "lt", 1699282643), {"dateTimeOrigination": "1699282642"}, True),
        (("finalCalledPartyNumber", "eq", "1000"), MISSED, True),
        (("finalCalledPartyNumber", "ne", "1000"), ANSWERED, True),
        (("finalCalledPartyNumber", "in", ["5000", "1000"]), MISSED, True),
        (("finalCalledPartyNumber", "in", "5000,1000"), MISSED, True),
        (("finalCalledPartyNumber", "not_in", "5000,1000"), MISSED, False),
        (("callingPartyNumber", "contains", "555"), {"callingPartyNumber": "+15551234"}, True),
        (("callingPartyNumber", "not_contains", "555"), {"callingPartyNumber": "+1444"}, True),
        (("callingPartyNumber", "startswith", "+1"), {"callingPartyNumber": "+15551234"}, True),
        (("callingPartyNumber", "endswith", "34"), {"callingPartyNumber": "+15551234"}, True),
        (
            ("origDeviceName", "regex", r"^SEP[0-9A-F]{12}$"),
            {"origDeviceName": "SEP20BBC020AAAA"},
            True,
        ),
        (("origDeviceName", "regex", r"^SEP"), {"origDeviceName": "TRUNK1"}, False),
        (("huntPilotDN", "is_empty", None), {}, True),
        (("huntPilotDN", "is_not_empty", ""), {"huntPilotDN": "3333"}, True),
        (("duration", "is_empty", None), {"duration": "0"}, False),
    ],
)
def test_each_operator(
    condition: tuple[str, str, object], record: dict[str, str], expected: bool
) -> None:
    assert matches([condition], **record) is expected


def test_conditions_are_anded() -> None:
    missed_to_call_center = [
        ("dateTimeConnect", "eq", "Never"),
        ("finalCalledPartyNumber", "in", "1000,1001"),
    ]
    assert matches(missed_to_call_center, **MISSED)
    assert not matches(missed_to_call_center, **{**MISSED, "finalCalledPartyNumber": "3000"})


def test_no_conditions_match_every_record() -> None:
    assert compile_rules([], INDEX)(row())


def test_field_names_are_case_insensitive_and_stored_canonically() -> None:
    rule = validate_condition("DATETIMECONNECT", "eq", "never")
    assert (rule.field, rule.value) == ("dateTimeConnect", 0)
    assert validate_condition(" duration ", "gt", "300").value == 300


def test_a_field_the_file_lacks_reads_as_empty() -> None:
    older = {name: i for i, name in enumerate(header("cdr", 118))}
    assert compile_rules([validate_condition("huntPilotPattern", "is_empty", None)], older)(
        ["x"] * 118
    )
    assert not compile_rules([validate_condition("huntPilotPattern", "eq", "7")], older)(
        ["x"] * 118
    )


@pytest.mark.parametrize(
    ("condition", "key", "message"),
    [
        (
            ("nosuchField", "eq", "1"),
            "field",
            "unknown CDR field 'nosuchField'; valid fields: cdrRecordType,",
        ),
        (("duration", "like", "1"), "operator", "unknown operator 'like'"),
        (("duration", "contains", "1"), "operator", "contains does not apply to duration"),
        (("callingPartyNumber", "gt", "5"), "operator", "gt does not apply to callingPartyNumber"),
        (("duration", "gt", "five"), "value", "'five' is not a whole number"),
        (("duration", "gt", True), "value", "not true/false"),
        (
            ("dateTimeConnect", "gt", "yesterday"),
            "value",
            "neither epoch seconds, ISO-8601 nor Never",
        ),
        (("origDeviceName", "regex", "(unclosed"), "value", "invalid regular expression"),
        (("origDeviceName", "regex", "a" * 501), "value", "longer than 500"),
        (("destCause_value", "in", ""), "value", "at least one value"),
        (("destCause_value", "in", "17,x"), "value", "'x' is not a whole number"),
        (("duration", "eq", [1, 2]), "value", "takes one value"),
        (("callingPartyNumber", "contains", ""), "value", "a value is required"),
        (("callingPartyNumber", "eq", None), "value", "a value is required"),
    ],
)
def test_invalid_conditions_are_refused_with_the_reason(
    condition: tuple[str, str, object], key: str, message: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        validate_condition(*condition)
    assert message in caught.value.errors[key]


def test_match_batch_gives_exactly_what_each_matcher_gives_row_by_row() -> None:
    """The batch algorithm (value sets, most selective rule first) against the plain
    per-row matcher, over random rows and random webhooks drawn from small value pools so
    that values repeat, rules are shared and every operator meets matches and misses."""
    import random

    from webhooks.matching import match_batch

    rng = random.Random(7)
    numbers = ["", "1000", "1001", "2000", "+4930123", "555"]
    devices = ["", "SEP0011AABBCC01", "SEP0011AABBCC02", "TRUNK-PSTN", "CTI-1"]
    pool = {
        "callingPartyNumber": numbers,
        "finalCalledPartyNumber": numbers,
        "origDeviceName": devices,
        "duration": ["", "0", "4", "5", "6", "30", "299", "300", "301", "4000"],
        "dateTimeConnect": ["0", "", "1699282642", "1699282700"],
        "destCause_value": ["0", "16", "17", "19", "393216"],
    }
    shapes: list[tuple[str, str, object]] = [
        ("callingPartyNumber", "eq", "1000"),
        ("callingPartyNumber", "startswith", "+49"),
        ("finalCalledPartyNumber", "in", ["1000", "2000"]),
        ("finalCalledPartyNumber", "regex", r"^\d{4}$"),
        ("origDeviceName", "contains", "SEP"),
        ("origDeviceName", "not_in", ["TRUNK-PSTN"]),
        ("origDeviceName", "is_empty", ""),
        ("duration", "gt", 300),
        ("duration", "gte", 300),
        ("duration", "lt", 6),
        ("duration", "lte", 5),
        ("duration", "gt", -1),
        ("destCause_value", "lt", 17),
        ("dateTimeConnect", "eq", "Never"),
        ("dateTimeConnect", "gt", 0),
        ("destCause_value", "ne", 16),
        ("destCause_value", "in", [17, 19]),
    ]
    index = {name: i for i, name in enumerate(header("cdr", 133))}
    for _ in range(30):
        matchers = [
            compile_rules(
                [validate_condition(*c) for c in rng.sample(shapes, rng.randint(0, 4))], index
            )
            for _ in range(25)
        ]
        # Several batches through the same matchers: later ones start from the rule that
        # earlier ones measured as the most selective, on rows drawn with other odds.
        for _ in range(3):
            weights = {name: [rng.random() for _ in choices] for name, choices in pool.items()}
            rows = []
            for _ in range(rng.randint(0, 300)):
                values = [""] * 133
                for name, choices in pool.items():
                    values[index[name]] = rng.choices(choices, weights[name])[0]
                rows.append(values)
            expected = [[i for i, r in enumerate(rows) if m(r)] for m in matchers]
            assert match_batch(matchers, rows) == expected
