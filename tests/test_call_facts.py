"""The rules behind every call field (cdr.facts), case by case."""

from __future__ import annotations

from typing import Any

import pytest

from cdr.facts import Leg, Quality, awaits_continuation, call_facts

T0 = 1_700_000_000


def leg(**kw: Any) -> Leg:
    values: dict[str, Any] = {
        "id": 1,
        "origination": T0,
        "connect": None,
        "disconnect": T0 + 20,
        "calling": "1001",
        "original_called": "2001",
        "final_called": "2001",
        "orig_cause": 16,
        "dest_cause": 0,
        "orig_termination_on_behalf_of": 12,
        "dest_termination_on_behalf_of": 0,
        "join_on_behalf_of": 0,
        "orig_redirect_reason": 0,
        "last_redirect_reason": 0,
        "orig_redirect_on_behalf_of": 0,
        "last_redirect_on_behalf_of": 0,
    }
    values.update(kw)
    return Leg(**values)


def test_an_answered_call() -> None:
    facts = call_facts([leg(connect=T0 + 5, disconnect=T0 + 65)], [], frozenset())
    assert facts.answered and not facts.missed and not facts.voicemail
    assert (facts.duration, facts.ring_seconds, facts.legs) == (60, 5, 1)
    assert (facts.caller, facts.dialed, facts.answered_by, facts.cause) == (
        "1001",
        "2001",
        "2001",
        16,
    )
    assert (facts.started, facts.ended) == (T0, T0 + 65)
    assert facts.mos_min is None and facts.jitter_max is None and facts.loss_pct is None


def test_a_call_nobody_answered_is_missed_with_its_ring_time() -> None:
    facts = call_facts([leg(dest_cause=19, disconnect=T0 + 30)], [], frozenset())
    assert facts.missed and not facts.answered
    assert (facts.duration, facts.ring_seconds, facts.cause, facts.answered_by) == (0, 30, 19, "")


def test_forward_no_answer_to_voicemail_is_missed_and_voicemail() -> None:
    to_vm = leg(
        connect=T0 + 12,
        disconnect=T0 + 40,
        original_called="2001",
        final_called="8000",
        orig_redirect_reason=2,
        last_redirect_reason=2,
        orig_redirect_on_behalf_of=5,
        last_redirect_on_behalf_of=5,
    )
    facts = call_facts([to_vm], [], frozenset({"8000"}))
    assert facts.missed and facts.voicemail and facts.forwarded and not facts.answered
    assert (facts.dialed, facts.answered_by, facts.duration, facts.ring_seconds) == (
        "2001",
        "",
        0,
        12,
    )
    # Without the pilot configured the voicemail system counts as a person.
    unknown = call_facts([to_vm], [], frozenset())
    assert unknown.answered and not unknown.missed and not unknown.voicemail


def test_off_hook_without_dialing_is_not_a_missed_call() -> None:
    facts = call_facts([leg(original_called="", final_called="")], [], frozenset())
    assert not facts.answered and not facts.missed


def test_consultation_transfer_facts_and_continuation() -> None:
    split = {"orig_cause": 393216, "dest_cause": 393216}
    split |= {"orig_termination_on_behalf_of": 10, "dest_termination_on_behalf_of": 10}
    original = leg(id=1, connect=T0 + 3, disconnect=T0 + 100, **split)
    consult = leg(
        id=2,
        origination=T0 + 60,
        connect=T0 + 65,
        disconnect=T0 + 100,
        calling="2001",
        original_called="3001",
        final_called="3001",
        **split,
    )
    assert awaits_continuation([original]) and awaits_continuation([original, consult])
    final = leg(
        id=3,
        origination=T0 + 100,
        connect=T0 + 100,
        disconnect=T0 + 400,
        final_called="3001",
        join_on_behalf_of=10,
        last_redirect_on_behalf_of=10,
        last_redirect_reason=4,
    )
    assert not awaits_continuation([original, consult, final])
    facts = call_facts([final, consult, original], [], frozenset())
    assert facts.transferred and facts.answered and not facts.conference
    assert (facts.legs, facts.caller, facts.dialed, facts.answered_by) == (
        3,
        "1001",
        "2001",
        "2001",
    )
    assert (facts.duration, facts.ring_seconds, facts.cause) == (397, 3, 16)


def test_a_conference_is_known_by_its_codes_or_its_bridge() -> None:
    assert call_facts([leg(connect=T0, join_on_behalf_of=4)], [], ()).conference
    assert call_facts([leg(connect=T0, final_called="b00105401002")], [], ()).conference
    assert not call_facts([leg(connect=T0)], [], ()).conference


@pytest.mark.parametrize("reason", [1, 2, 15, 50])
def test_forward_reasons(reason: int) -> None:
    assert call_facts([leg(connect=T0, last_redirect_reason=reason)], [], ()).forwarded


def test_quality_lowest_mos_worst_jitter_and_loss() -> None:
    quality = [
        Quality(mos=4.2, jitter=3, packets_lost=10, packets_received=990),
        Quality(mos=2.9, jitter=12, packets_lost=0, packets_received=1000),
        Quality(mos=None, jitter=None, packets_lost=None, packets_received=None),
    ]
    facts = call_facts([leg(connect=T0)], quality, ())
    assert (facts.mos_min, facts.jitter_max, facts.loss_pct, facts.cmr_count) == (2.9, 12, 0.5, 3)


def test_no_mos_reported_is_none_not_zero() -> None:
    quality = [Quality(mos=0.0, jitter=2, packets_lost=0, packets_received=0)]
    facts = call_facts([leg(connect=T0)], quality, ())
    assert facts.mos_min is None and facts.jitter_max == 2 and facts.loss_pct is None


def test_a_conference_setup_call_waits_for_the_bridge_legs() -> None:
    """Conference Calls: the setup call ends with OnBehalfOf 4 and no cause; the bridge leg
    that reuses its leg id is written when the conference ends."""
    setup = leg(orig_cause=0, orig_termination_on_behalf_of=4, dest_termination_on_behalf_of=4)
    assert awaits_continuation([setup])
    bridge = leg(id=2, final_called="b0029901001", join_on_behalf_of=4)
    assert not awaits_continuation([setup, bridge])
