"""Legs and CMRs joined into calls at ingest, and calls settled (cdr.calls)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from cdr import generator
from cdr.calls import CONTINUATION_WAIT, KEY_HORIZON, calls_settle
from cdr.facts import CallFacts
from cdr.models import Call, Cdr, CdrFile, Cmr
from cdr.services import cdr_file_ingest

pytestmark = pytest.mark.django_db

SETTLED = timedelta(seconds=121)  # past the default CALL_SETTLE_SECONDS


def one_call(scenario: str, *, seed: int = 1, cmr: bool = False, **kw: Any) -> generator.Call:
    rows = {"answered": 1, "missed": 1, "voicemail": 1, "transferred": 3, "conference": 6}
    calls = list(
        generator.iter_calls(records=rows[scenario], mix={scenario: 1}, seed=seed, cmr=cmr, **kw)
    )
    assert len(calls) == 1 and calls[0].scenario == scenario
    return calls[0]


class Files:
    """Writes CUCM files of chosen rows and ingests them, each under a new name."""

    def __init__(self, root: Path):
        self.root = root
        self.seq = 0

    def ingest(self, kind: str, rows: list[dict[str, object]], node: int = 1) -> CdrFile:
        self.seq += 1
        path = self.root / f"{kind}_StandAloneCluster_{node:02d}_202501060800_{self.seq}"
        generator.write_file(path, kind, rows)
        cdr_file = cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
        assert cdr_file.status == CdrFile.Status.DONE, cdr_file.error
        return cdr_file


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def live_calls() -> list[Call]:
    return list(Call.objects.filter(merged_into__isnull=True).order_by("id"))


def settle_all() -> list[int]:
    return calls_settle(now=timezone.now() + SETTLED)


@pytest.mark.parametrize("final_first", [True, False], ids=["final-leg-first", "final-leg-last"])
def test_a_consultation_transfer_in_two_nodes_files_is_one_call(
    files: Files, final_first: bool
) -> None:
    original, consult, final = (record.cdr for record in one_call("transferred").records)
    if final_first:
        files.ingest("cdr", [final], node=2)
        files.ingest("cdr", [consult, original], node=1)
    else:
        files.ingest("cdr", [consult, original], node=1)
        files.ingest("cdr", [final], node=2)
    (call,) = live_calls()
    assert set(Cdr.objects.values_list("call_ref", flat=True)) == {call.pk}
    assert settle_all() == [call.pk]
    call.refresh_from_db()
    assert (call.legs, call.transferred, call.answered, call.missed) == (3, True, True, False)
    assert call.caller == original["callingPartyNumber"]
    assert call.dialed == original["originalCalledPartyNumber"]
    assert call.answered_by == original["finalCalledPartyNumber"]
    assert call.duration == final["dateTimeDisconnect"] - original["dateTimeConnect"]
    assert (call.call_manager_id, call.call_id) == (
        original["globalCallID_callManagerId"],
        original["globalCallID_callId"],
    ) or final_first


def test_a_split_call_waits_for_the_leg_that_continues_it(files: Files) -> None:
    original, consult, final = (record.cdr for record in one_call("transferred").records)
    files.ingest("cdr", [consult, original])
    assert len(live_calls()) == 2  # nothing ties them together before the last leg
    assert settle_all() == []  # both halves wait for the transferred call's CDR
    assert Call.objects.filter(held_until__isnull=False).count() == 2
    files.ingest("cdr", [final])
    (call,) = live_calls()
    assert call.held_until is None
    assert settle_all() == [call.pk]


def test_a_split_call_whose_continuation_never_comes_settles_after_the_wait(files: Files) -> None:
    original, consult, _ = (record.cdr for record in one_call("transferred").records)
    files.ingest("cdr", [consult, original])
    assert settle_all() == []
    later = timezone.now() + CONTINUATION_WAIT + SETTLED
    assert len(calls_settle(now=later)) == 2


def test_a_conference_is_one_call(files: Files) -> None:
    rows = [record.cdr for record in one_call("conference", seed=3).records]
    files.ingest("cdr", rows[::-1])
    (call,) = live_calls()
    settle_all()
    call.refresh_from_db()
    assert (call.legs, call.conference) == (6, True)


def test_a_call_settles_only_once_nothing_arrived_for_the_settle_time(
    files: Files, settings: Any
) -> None:
    settings.CALL_SETTLE_SECONDS = 300
    files.ingest("cdr", [one_call("answered").records[0].cdr])
    (call,) = live_calls()
    assert calls_settle(now=call.last_arrival_at + timedelta(seconds=299)) == []
    assert calls_settle(now=call.last_arrival_at + timedelta(seconds=300)) == [call.pk]
    assert calls_settle(now=call.last_arrival_at + timedelta(seconds=900)) == []


def test_cmrs_join_their_call_and_a_late_cmr_opens_it_again(files: Files) -> None:
    record = one_call("answered", seed=5, cmr=True).records[0]
    assert record.cmrs
    files.ingest("cdr", [record.cdr])
    (call,) = live_calls()
    assert settle_all() == [call.pk]
    call.refresh_from_db()
    assert call.settled_at is not None and call.cmr_count == 0

    files.ingest("cmr", list(record.cmrs))
    call.refresh_from_db()
    assert call.settled_at is None  # open again: its quality just arrived
    assert set(Cmr.objects.values_list("call_ref", flat=True)) == {call.pk}
    assert settle_all() == [call.pk]
    call.refresh_from_db()
    assert (call.settle_count, call.cmr_count) == (2, len(record.cmrs))
    scores = [c.mos for c in Cmr.objects.all() if c.mos is not None]
    assert call.mos_min == (min(scores) if scores else None)
    assert call.jitter_max == max(c["jitter"] for c in record.cmrs)


def test_mos_is_read_from_varvqmetrics_and_missing_scores_are_empty(files: Files) -> None:
    record = one_call("answered", seed=5, cmr=True).records[0]
    rows = [dict(record.cmrs[0]) for _ in range(4)]
    rows[0]["varVQMetrics"] = "MLQK=4.1000;MLQKav=3.9500;MLQKmn=2.9000;MLQKmx=4.5;MLQKvr=0.95"
    rows[1]["varVQMetrics"] = "MLQK=4.1000;MLQKav=3.9500;CCR=0.0021"
    rows[2]["varVQMetrics"] = "CCR=0.0021;ICR=0.0000;Ver=0.90;VoRxCodec=G.711 u-la;CID=2"
    rows[3]["varVQMetrics"] = "MLQK=0.0000;MLQKav=0.0000;MLQKmn=0.0000"
    for i, row in enumerate(rows):
        row["pkid"] = f"00000000-0000-4000-8000-00000000000{i}"
    files.ingest("cmr", rows)
    assert list(Cmr.objects.order_by("line").values_list("mos", flat=True)) == [
        2.9,
        3.95,
        None,
        None,
    ]


def test_a_resend_changes_nothing(files: Files) -> None:
    rows = [record.cdr for record in one_call("transferred", seed=7).records]
    files.ingest("cdr", rows)
    settle_all()
    before = list(Call.objects.values())
    again = files.ingest("cdr", rows[::-1])  # same records, another file
    assert (again.stored_count, again.duplicate_count) == (0, 3)
    assert list(Call.objects.values()) == before


def test_a_call_id_cucm_reused_days_later_is_another_call(files: Files) -> None:
    first = one_call("answered", seed=11).records[0].cdr
    later = dict(one_call("answered", seed=12).records[0].cdr)
    shift = KEY_HORIZON + 86400
    later.update(
        globalCallID_callId=first["globalCallID_callId"],
        dateTimeOrigination=int(first["dateTimeOrigination"]) + shift,
        dateTimeConnect=int(first["dateTimeConnect"]) + shift,
        dateTimeDisconnect=int(first["dateTimeDisconnect"]) + shift,
    )
    files.ingest("cdr", [first])
    files.ingest("cdr", [later])
    assert len(live_calls()) == 2


def test_missed_and_voicemail_calls(files: Files, settings: Any) -> None:
    settings.VOICEMAIL_NUMBERS = frozenset({"8000"})
    files.ingest("cdr", [one_call("missed", seed=2).records[0].cdr])
    files.ingest("cdr", [one_call("voicemail", seed=4).records[0].cdr])
    settle_all()
    missed, voicemail = live_calls()
    assert (missed.missed, missed.answered, missed.voicemail) == (True, False, False)
    assert (voicemail.missed, voicemail.voicemail, voicemail.forwarded) == (True, True, True)


def test_without_assembly_records_have_no_call(tmp_path: Path) -> None:
    path = tmp_path / "cdr_StandAloneCluster_01_202501060800_1"
    generator.write_file(path, "cdr", [one_call("answered").records[0].cdr])
    cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False, assemble_calls=False)
    assert Call.objects.count() == 0 and Cdr.objects.get().call_ref_id is None


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_settle_each_call_once(files: Files) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent sweeps need PostgreSQL; SQLite runs one writer at a time")
    calls = generator.iter_calls(records=400, mix={"answered": 1}, seed=21)
    files.ingest("cdr", [call.records[0].cdr for call in calls])
    assert Call.objects.count() == 400
    results: list[list[int]] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        try:
            barrier.wait()
            results.append(calls_settle(now=timezone.now() + SETTLED))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = results
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(Call.objects.values_list("id", flat=True))
    assert set(Call.objects.values_list("settle_count", flat=True)) == {1}


def test_replay_settles_the_calls_it_touched_at_its_end(samples: Path) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("replay_cdr", str(samples), "--no-webhooks", stdout=out)
    settled = Call.objects.filter(merged_into__isnull=True, settled_at__isnull=False, legs__gt=0)
    assert f"Calls: {settled.count()} settled." in out.getvalue()
    assert settled.count() == 24  # the samples' 24 CDRs are 24 single-leg calls
    # CMRs whose CDRs are not among the samples settle without facts: one call per global
    # call id (the 2015 sample's three CMR calls share a callIdentifier, and stay three).
    assert Call.objects.filter(legs=0, settled_at__isnull=False).count() == 3 + 5
    # The CUCM 15 sample's two CMRs join its answered call 25447.
    (answered,) = Call.objects.filter(call_id=25447)
    assert (answered.legs, answered.cmr_count) == (1, 2)
    assert not Call.objects.filter(merged_into__isnull=True, settled_at__isnull=True).exists()
    assert not Cdr.objects.filter(call_ref__isnull=True).exists()
    # Each call's legs share CUCM's global call id or a leg id with another leg of it.
    for call in settled:
        legs = list(call.cdr_set.all())
        assert call.legs == len(legs)


def test_numbers_with_quotes_commas_and_backslashes_survive_settling(files: Files) -> None:
    row = dict(one_call("answered", seed=13).records[0].cdr)
    odd = 'a"b,c\\d{e} NULL'
    row.update(callingPartyNumber=odd, originalCalledPartyNumber="NULL")
    files.ingest("cdr", [row])
    settle_all()
    (call,) = live_calls()
    assert (call.caller, call.dialed) == (odd, "NULL")


# Scenarios of Cisco's "CDR Examples", built by the generator (cdr.generator.one_call).


def settled_call(files: Files, scenario: str, **kw: Any) -> Call:
    call = generator.one_call(scenario, **kw)
    for record in call.records:
        files.ingest("cdr", [record.cdr])  # one file per leg, as from several nodes
    settle_all()
    (found,) = live_calls()
    return found


def test_a_blind_transfer_is_one_transferred_call(files: Files) -> None:
    call = settled_call(files, "blind_transfer", seed=2)
    assert (call.transferred, call.answered, call.missed, call.legs) == (True, True, False, 3)


def test_a_hunt_pilot_nobody_answered_is_a_missed_call(files: Files) -> None:
    call = settled_call(files, "hunt_no_answer", seed=2)
    assert (call.missed, call.answered, call.legs, call.dialed) == (True, False, 1, "8100")


def test_a_hunt_pilot_a_member_answered_is_answered_by_the_member(files: Files) -> None:
    call = settled_call(files, "hunt_answered", seed=2)
    assert call.answered and not call.missed and call.answered_by not in ("", "8100")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_immediate_divert_to_voicemail_is_missed_voicemail(
    files: Files, settings: Any, seed: int
) -> None:
    settings.VOICEMAIL_NUMBERS = frozenset({"8000"})
    call = settled_call(files, "immediate_divert", seed=seed)
    assert call.voicemail and call.forwarded
    # Diverted while ringing nobody answered; diverted while connected somebody had.
    assert call.missed == (call.legs == 1)


def test_a_transfer_over_two_nodes_files_delivered_out_of_order_is_one_call(
    files: Files,
) -> None:
    call = generator.one_call("transferred", seed=3, nodes=2, mos=2.9)
    by_node: dict[int, list[dict[str, object]]] = {}
    cmrs: list[dict[str, object]] = []
    for record in call.records:
        node = int(record.cdr["globalCallID_callManagerId"])
        by_node.setdefault(node, []).append(record.cdr)
        cmrs += record.cmrs
    assert sorted(by_node) == [1, 2]
    for node in (2, 1):  # node 2's file first
        files.ingest("cdr", by_node[node], node=node)
    files.ingest("cmr", cmrs)
    (found,) = live_calls()
    assert settle_all() == [found.pk]
    found.refresh_from_db()
    assert (found.legs, found.transferred, found.mos_min, found.cmr_count) == (
        3,
        True,
        2.9,
        len(cmrs),
    )


_KILLED_MID_SETTLE = """
import os, signal, django
django.setup()
from datetime import timedelta
from django.utils import timezone
from cdr import calls
real = calls.call_listener()

class DiesAfterFiring:
    def settled(self, call_ids):
        real.settled(call_ids)  # deliveries written, transaction not committed
        os.kill(os.getpid(), signal.SIGKILL)

calls.call_listener = lambda: DiesAfterFiring()
calls.calls_settle(now=timezone.now() + timedelta(seconds=121))
"""


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_settle_fires_each_call_once_after_all(
    files: Files, process_env: dict[str, str]
) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT
    from webhooks.models import Delivery, Webhook

    if connection.vendor != "postgresql":
        pytest.skip("a second process writing mid-transaction needs PostgreSQL")
    Webhook.objects.create(
        name="every call", url="http://127.0.0.1:9/hook", scope=Webhook.Scope.CALL
    )
    calls = generator.iter_calls(records=50, mix={"answered": 1}, seed=31)
    files.ingest("cdr", [call.records[0].cdr for call in calls])
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_SETTLE], env=process_env, cwd=ROOT, timeout=120
    )
    assert child.returncode == -9  # killed inside the settle's transaction
    assert Call.objects.filter(settled_at__isnull=True).count() == 50
    assert Delivery.objects.count() == 0  # what it wrote went with its transaction
    assert len(settle_all()) == 50
    assert Delivery.objects.filter(call__isnull=False).count() == 50
    assert settle_all() == [] and Delivery.objects.count() == 50


@pytest.mark.parametrize("mos", ["phone", 2.9])
def test_postgresql_settles_with_the_same_facts_as_the_python_rules(
    tmp_path: Path, settings: Any, mos: object
) -> None:
    """On PostgreSQL a batch is settled by one statement (cdr.sql); `cdr.facts.call_facts`
    is the definition. Every scenario, from two nodes, with and without MOS, both ways."""
    from cdr import sql
    from cdr.facts import call_facts

    if connection.vendor != "postgresql":
        pytest.skip("SQLite settles through cdr.facts itself")
    settings.VOICEMAIL_NUMBERS = frozenset({"8000", "8100"})
    mix = {scenario: 1 for scenario in generator.SCENARIOS}
    paths = generator.generate(
        tmp_path / "files", records=400, mix=mix, cmr=True, nodes=2, seed=41, mos=mos
    )
    for path in sorted(paths, key=lambda p: (p.name.startswith("cmr"), p.name)):
        cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
    ids = [call.pk for call in live_calls()]
    assert len(calls_settle(call_ids=ids, force=True, notify=False)) == len(ids)
    legs, quality = sql.legs_of(ids), sql.quality_of(ids)
    fields = [f for f in CallFactsFields]
    mismatches = []
    for call in Call.objects.filter(pk__in=ids):
        expected = call_facts(legs[call.pk], quality.get(call.pk, []), settings.VOICEMAIL_NUMBERS)
        got = {
            "started": int(call.started_at.timestamp()),
            "ended": int(call.ended_at.timestamp()),
            **{name: getattr(call, name) for name in fields},
        }
        want = {name: getattr(expected, name) for name in got}
        if got != want:
            mismatches.append((call.pk, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))
    assert mismatches == []
    kinds = Call.objects.filter(pk__in=ids)
    assert kinds.filter(transferred=True).exists() and kinds.filter(conference=True).exists()
    assert kinds.filter(missed=True, voicemail=True).exists() and kinds.filter(forwarded=True)


# Every fact but the two times, which the test compares as epoch seconds.
CallFactsFields = tuple(
    f.name for f in dataclasses.fields(CallFacts) if f.name not in ("started", "ended")
)
