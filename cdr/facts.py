"""What a call was, from its legs and CMRs: the rules behind every `call.*` field.

Plain Python over plain tuples (the settle sweep loads only typed columns, never raw
lines), one function per call. Codes are CUCM's (reference/cucm-cdr.md §3.4-3.6); each rule
names the "CDR Examples" section of Cisco's CDR Administration Guide it follows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# OnBehalfOf (§3.5): why a leg ended, was redirected or joined.
CONFERENCE, CALL_FORWARD, TRANSFER, IMMEDIATE_DIVERT = 4, 5, 10, 14
# Causes (§3.4): "call split" ends the legs a transfer or conference replaced: it is not
# what ended the call.
SPLIT = 393216
# Redirect reasons (§3.6). Forwards: busy, no answer, forward, forward all, deflection,
# immediate divert, alternate party, on failure, unregistered.
FORWARD_REASONS = frozenset({1, 2, 10, 15, 18, 50, 66, 82, 178})
TRANSFER_REASONS = frozenset({4, 34})  # call transfer, blind transfer
CONFERENCE_REASONS = frozenset({98})
# A conference bridge's number: CUCM writes the bridge as "b00…" (Conference Calls).
BRIDGE_PREFIX = "b00"


class Leg(NamedTuple):
    """One CDR as the settle sweep reads it (times in epoch seconds; None: never)."""

    id: int
    origination: int | None
    connect: int | None
    disconnect: int | None
    calling: str
    original_called: str
    final_called: str
    orig_cause: int | None
    dest_cause: int | None
    orig_termination_on_behalf_of: int | None
    dest_termination_on_behalf_of: int | None
    join_on_behalf_of: int | None
    orig_redirect_reason: int | None
    last_redirect_reason: int | None
    orig_redirect_on_behalf_of: int | None
    last_redirect_on_behalf_of: int | None


class Quality(NamedTuple):
    """One CMR as the settle sweep reads it."""

    mos: float | None
    jitter: int | None
    packets_lost: int | None
    packets_received: int | None


@dataclass(frozen=True, slots=True)
class CallFacts:
    started: int | None
    ended: int | None
    legs: int
    cmr_count: int
    answered: bool
    missed: bool
    voicemail: bool
    transferred: bool
    forwarded: bool
    conference: bool
    duration: int
    ring_seconds: int | None
    caller: str
    dialed: str
    answered_by: str
    cause: int | None
    mos_min: float | None
    jitter_max: int | None
    loss_pct: float | None


def _codes(leg: Leg) -> tuple[int | None, ...]:
    return (
        leg.orig_termination_on_behalf_of,
        leg.dest_termination_on_behalf_of,
        leg.join_on_behalf_of,
        leg.orig_redirect_on_behalf_of,
        leg.last_redirect_on_behalf_of,
    )


def leg_split(leg: Leg) -> bool:
    """The leg ended on behalf of a transfer (10) or conference (4), so the conversation
    goes on in a leg written later. "Transferred Calls": the original and consultation
    legs end with OnBehalfOf 10 and cause 393216; "Conference Calls": the original call
    ends with 4 and 393216, each setup (consultation) call with 4 and no cause at all, and
    reaches the call only through the bridge leg that reuses its leg id."""
    return bool(
        {leg.orig_termination_on_behalf_of, leg.dest_termination_on_behalf_of}
        & {TRANSFER, CONFERENCE}
    )


def leg_joins(leg: Leg) -> bool:
    """The leg continues a conversation a split ended: the transferred call (joinOnBehalfOf
    10, "Transferred Calls") or a conference leg (joinOnBehalfOf 4, "Conference Calls")."""
    return leg.join_on_behalf_of in (TRANSFER, CONFERENCE)


def awaits_continuation(legs: Sequence[Leg]) -> bool:
    """A leg was split and no leg of the call continues it yet: the call is not complete."""
    return any(map(leg_split, legs)) and not any(map(leg_joins, legs))


def _cause(leg: Leg) -> int | None:
    """The cause that ended a leg: the called side's when it gave one (busy 17, no answer
    19, …), else the calling side's (16: normal clearing by whoever hung up)."""
    for value in (leg.dest_cause, leg.orig_cause):
        if value and value != SPLIT:
            return value
    return leg.dest_cause or leg.orig_cause


def _percent(part: int, whole: int) -> float:
    """100 × part / whole to three decimals, half up, in integer arithmetic: PostgreSQL's
    settle statement computes it the same way, to the same float."""
    return ((200_000 * part + whole) // (2 * whole)) / 1000


def call_facts(
    legs: Sequence[Leg], quality: Sequence[Quality], voicemail_numbers: Collection[str]
) -> CallFacts:
    """Every call field of one call; `legs` must not be empty."""
    ordered = sorted(legs, key=lambda leg: (leg.origination or 0, leg.id))
    first = ordered[0]
    connected = sorted(
        (leg for leg in ordered if leg.connect), key=lambda leg: (leg.connect, leg.id)
    )
    # Forwarded or Redirected Calls / Immediate Divert: a leg that reached a voicemail pilot
    # was answered by the voicemail system, not by a person.
    to_voicemail = [leg for leg in connected if leg.final_called in voicemail_numbers]
    by_person = [leg for leg in connected if leg.final_called not in voicemail_numbers]
    answered = bool(by_person)
    # Off-hook without dialing leaves a leg with no called number at all: not a call.
    dialed = first.original_called or first.final_called
    missed = not answered and any(leg.original_called or leg.final_called for leg in legs)
    codes = {code for leg in legs for code in _codes(leg)}
    reasons = {r for leg in legs for r in (leg.orig_redirect_reason, leg.last_redirect_reason)}
    transferred = TRANSFER in codes or bool(reasons & TRANSFER_REASONS)
    conference = (
        CONFERENCE in codes
        or bool(reasons & CONFERENCE_REASONS)
        or any(leg.final_called.startswith(BRIDGE_PREFIX) for leg in legs)
    )
    forwarded = bool({CALL_FORWARD, IMMEDIATE_DIVERT} & codes) or bool(reasons & FORWARD_REASONS)

    started = first.origination
    ends = [leg.disconnect for leg in legs if leg.disconnect]
    ended = max(ends) if ends else started
    first_connect = connected[0].connect if connected else None
    if answered and first_connect is not None:
        last_end = max((leg.disconnect or 0 for leg in connected), default=0)
        duration = max(0, last_end - first_connect)
    else:
        duration = 0
    if started is None:
        ring = None
    elif first_connect is not None:
        ring = max(0, first_connect - started)
    else:
        ring = max(0, (ended or started) - started)
    last = max(legs, key=lambda leg: (leg.disconnect or 0, leg.id))

    moses = [q.mos for q in quality if q.mos is not None and q.mos > 0]
    jitters = [q.jitter for q in quality if q.jitter is not None]
    lost = sum(max(q.packets_lost or 0, 0) for q in quality)
    received = sum(max(q.packets_received or 0, 0) for q in quality)
    expected = lost + received
    return CallFacts(
        started=started,
        ended=ended,
        legs=len(legs),
        cmr_count=len(quality),
        answered=answered,
        missed=missed,
        voicemail=bool(to_voicemail),
        transferred=transferred,
        forwarded=forwarded,
        conference=conference,
        duration=duration,
        ring_seconds=ring,
        caller=first.calling,
        dialed=dialed,
        answered_by=by_person[0].final_called if by_person else "",
        cause=_cause(last),
        mos_min=min(moses) if moses else None,
        jitter_max=max(jitters) if jitters else None,
        loss_pct=_percent(lost, expected) if quality and expected else None,
    )
