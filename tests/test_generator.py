"""The CUCM file generator: format, call patterns, determinism and the command."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import socket
import struct
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cdr.fields import CDR_FIELDS, CMR_FIELDS, header
from cdr.generator import (
    DEFAULT_MIX,
    SCENARIOS,
    Call,
    file_name,
    generate,
    iter_calls,
    one_call,
    render_row,
    write_calls,
    write_file,
)
from cdr.models import Cdr, CdrFile, Cmr
from cdr.services import cdr_file_ingest

NAME_RE = re.compile(r"^(cdr|cmr)_(?P<cluster>.+)_(?P<node>\d{2})_(?P<stamp>\d{12})_(?P<seq>\d+)$")


def read(path: Path) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """Names, types and rows of one file, parsed with the csv module as a consumer would."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    lines = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))
    names, types, *rows = lines
    for row in rows:
        assert len(row) == len(names)
    return names, types, [dict(zip(names, row, strict=True)) for row in rows]


def rows_of(files: list[Path], kind: str) -> list[dict[str, str]]:
    return [row for path in files if path.name.startswith(kind) for row in read(path)[2]]


def decode_ip(value: str) -> str:
    return socket.inet_ntoa(struct.pack("<i", int(value)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict[str, str]]]:
    """10,000 CDRs with CMRs in 2,500-row files, shared by the read-only checks."""
    files = generate(
        tmp_path_factory.mktemp("batch"), records=10_000, cmr=True, seed=7, records_per_file=2_500
    )
    return files, rows_of(files, "cdr")


@pytest.mark.parametrize(("cdr_count", "cmr_count"), [(118, 19), (129, 44), (133, 48)])
def test_each_generation_writes_its_own_header_lines_and_row_width(
    tmp_path: Path, cdr_count: int, cmr_count: int
) -> None:
    files = generate(tmp_path, records=60, generation=cdr_count, cmr=True)
    assert [p.name[:3] for p in files] == ["cdr", "cmr"]
    for path, kind, count, fields in (
        (files[0], "cdr", cdr_count, CDR_FIELDS),
        (files[1], "cmr", cmr_count, CMR_FIELDS),
    ):
        first_line = path.read_text().split("\n", 1)[0]
        assert first_line == ",".join(f'"{name}"' for name in header(kind, count))
        names, types, rows = read(path)
        assert names == header(kind, count)
        assert types == [f.type for f in fields[:count]]
        assert rows and all(len(row) == count for row in rows)
    assert len(read(files[0])[2]) == 60


@pytest.mark.parametrize(
    "sample",
    [
        "cucm15-sieteunoseis/cdr_cucmOHSUtest_02_202504181632_1",
        "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1",
        "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630",
        "cucm12-panos1962/cmr_StandAloneCluster_02_202012260844_476716",
    ],
)
def test_render_row_reproduces_real_cucm_lines_byte_for_byte(
    samples: Path, sample: str, tmp_path: Path
) -> None:
    path = samples / sample
    kind = path.name[:3]
    text = path.read_text()
    names, _, rows = read(path)
    real_lines = text.rstrip("\n").split("\n")
    for row, real in zip(rows, real_lines[2:], strict=True):
        assert render_row(kind, len(names), row) == real
    copy = tmp_path / path.name
    write_file(copy, kind, rows, count=len(names))
    assert copy.read_text().split("\n")[:2] == real_lines[:2]  # the name and type lines too


def test_unset_columns_get_cucm_defaults_and_strings_are_escaped() -> None:
    cdr = render_row("cdr", 118, {"pkid": "p", "callingPartyNumber": 'say "hi"', "duration": 5})
    cells = next(csv.reader([cdr]))
    by_name = dict(zip(header("cdr", 118), cells, strict=True))
    assert '"say ""hi"""' in cdr
    assert by_name["cdrRecordType"] == "1" and by_name["origPrecedenceLevel"] == "4"
    assert by_name["dateTimeConnect"] == "0" and ',"0","0",' in cdr  # RSVP text columns
    cmr = render_row("cmr", 44, {"pkid": "p", "duration": None, "varVQMetrics": "CS=0;SCS=0"})
    assert cmr.startswith('2,,,,"",,,') and ',"CS=0;SCS=0",,"",' in cmr


def test_columns_newer_than_the_generation_are_dropped_and_unknown_names_rejected() -> None:
    line = render_row("cdr", 129, {"pkid": "p", "origDeviceSessionID": "abc"})
    assert "abc" not in line and len(next(csv.reader([line]))) == 129
    with pytest.raises(KeyError, match="callingNumber"):
        render_row("cdr", 133, {"callingNumber": "1000"})


def test_write_file_writes_a_hand_crafted_row_and_leaves_no_partial_file(tmp_path: Path) -> None:
    when = datetime(2025, 4, 18, 16, 32, tzinfo=UTC)
    path = tmp_path / file_name("cdr", cluster="Lab-1", node=2, when=when, seq=7)
    assert path.name == "cdr_Lab-1_02_202504181632_7"
    rows = [{"globalCallID_callId": 42, "finalCalledPartyNumber": "2001"}, {}]
    assert write_file(path, "cdr", rows, count=129) == 2
    _, _, written = read(path)
    assert written[0]["globalCallID_callId"] == "42"
    assert written[0]["finalCalledPartyNumber"] == "2001"
    assert written[0]["pkid"] != written[1]["pkid"]  # a missing pkid is filled in
    with pytest.raises(KeyError):
        write_file(tmp_path / "cdr_bad", "cdr", [{"nope": 1}])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_file_names_follow_cucm_and_pair_cdr_with_cmr(batch: tuple[list[Path], list]) -> None:
    files, _ = batch
    assert len(files) == 8
    stamps = []
    for cdr_file, cmr_file in zip(files[::2], files[1::2], strict=True):
        cdr_match, cmr_match = NAME_RE.match(cdr_file.name), NAME_RE.match(cmr_file.name)
        assert cdr_match and cmr_match
        assert cdr_file.name[3:] == cmr_file.name[3:]  # same cluster, node, minute and seq
        assert cdr_match["cluster"] == "StandAloneCluster" and cdr_match["node"] == "01"
        rows = read(cdr_file)[2]
        assert len(rows) == 2_500
        ends = [int(row["dateTimeDisconnect"]) for row in rows]
        assert ends == sorted(ends)  # written as the legs end
        first = datetime.fromtimestamp(ends[0], UTC).strftime("%Y%m%d%H%M")
        assert cdr_match["stamp"] >= first
        stamps.append((cdr_match["stamp"], int(cdr_match["seq"])))
    assert stamps == sorted(stamps) and [seq for _, seq in stamps] == [1, 2, 3, 4]
    assert len({stamp for stamp, _ in stamps}) == 4
    assert not any(p.name.startswith("_") for p in files[0].parent.iterdir())


def test_every_row_is_consistent(batch: tuple[list[Path], list[dict[str, str]]]) -> None:
    files, cdrs = batch
    cmrs = rows_of(files, "cmr")
    pkids = [row["pkid"] for row in cdrs + cmrs]
    assert len(set(pkids)) == len(pkids)
    for row in cdrs:
        assert row["cdrRecordType"] == "1" and row["globalCallID_callManagerId"] == "1"
        start, connect, end = (
            int(row[name])
            for name in ("dateTimeOrigination", "dateTimeConnect", "dateTimeDisconnect")
        )
        if connect:
            assert start <= connect <= end
            assert int(row["duration"]) == end - connect
        else:
            assert start <= end and row["duration"] == "0"
        for side in ("orig", "dest"):
            text = row[f"{side}Ipv4v6Addr"]
            if text:
                assert decode_ip(row[f"{side}IpAddr"]) == text
        assert re.fullmatch(r"SEP[0-9A-F]{12}|SIP_TRUNK_\w+|CFB_\d", row["origDeviceName"])


def test_cmr_rows_join_to_connected_cdr_legs(
    batch: tuple[list[Path], list[dict[str, str]]],
) -> None:
    files, cdrs = batch
    legs: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in cdrs:
        key = (row["globalCallID_callManagerId"], row["globalCallID_callId"])
        legs[(*key, row["origLegCallIdentifier"])].append(row)
        legs[(*key, row["destLegIdentifier"])].append(row)
    cmrs = rows_of(files, "cmr")
    assert len(cmrs) > len(cdrs) // 2
    for cmr in cmrs:
        key = (cmr["globalCallID_callManagerId"], cmr["globalCallID_callId"], cmr["callIdentifier"])
        matches = [
            cdr
            for cdr in legs[key]
            if cdr["dateTimeDisconnect"] == cmr["dateTimeStamp"] and cdr["dateTimeConnect"] != "0"
        ]
        assert matches, cmr
        cdr = matches[0]
        assert cmr["deviceName"] in (cdr["origDeviceName"], cdr["destDeviceName"])
        assert cmr["deviceName"].startswith("SEP")
        assert cmr["localSessionID"] in (cdr["origDeviceSessionID"], cdr["destDeviceSessionID"])
        assert cmr["duration"] == cdr["duration"]
        assert re.fullmatch(r"(\w+=[^;]+;)+\w+=[^;]+", cmr["varVQMetrics"])
        assert cmr["videoDuration"] == "" and cmr["videoContentType"] == ""


def test_the_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    def contents(directory: str, seed: int, *, packed: bool = False) -> list[bytes]:
        files = generate(tmp_path / directory, records=300, cmr=True, seed=seed, gzip=packed)
        return [p.read_bytes() for p in files]

    assert contents("a", 1) == contents("b", 1)
    assert contents("c", 1, packed=True) == contents("d", 1, packed=True)
    assert contents("e", 2) != contents("a", 1)


def test_turning_cmrs_on_leaves_the_cdrs_unchanged(tmp_path: Path) -> None:
    plain = generate(tmp_path / "plain", records=200, seed=3)
    with_cmr = generate(tmp_path / "cmr", records=200, seed=3, cmr=True)
    assert plain[0].read_bytes() == with_cmr[0].read_bytes()


def test_gzip_output_is_the_same_content_compressed(tmp_path: Path) -> None:
    plain = generate(tmp_path / "plain", records=200, seed=4, cmr=True)
    packed = generate(tmp_path / "gz", records=200, seed=4, cmr=True, gzip=True)
    assert [p.name + ".gz" for p in plain] == [p.name for p in packed]
    for raw, compressed in zip(plain, packed, strict=True):
        assert compressed.read_bytes()[:2] == b"\x1f\x8b"
        assert gzip.decompress(compressed.read_bytes()) == raw.read_bytes()


def test_the_mix_is_honoured_per_call() -> None:
    counts = Counter(call.scenario for call in iter_calls(records=10_000, seed=5))
    calls = sum(counts.values())
    total = sum(DEFAULT_MIX.values())
    for scenario in SCENARIOS:
        assert counts[scenario] / calls == pytest.approx(DEFAULT_MIX[scenario] / total, abs=0.02)
    only = Counter(c.scenario for c in iter_calls(records=500, mix={"busy": 1, "missed": 3}))
    assert set(only) == {"busy", "missed"} and only["missed"] > 2 * only["busy"]


def test_the_record_count_is_exact_even_when_a_call_would_overshoot() -> None:
    calls = list(iter_calls(records=10, mix={"conference": 1}))
    assert sum(len(call.records) for call in calls) == 10
    assert [call.scenario for call in calls] == ["conference"] + ["answered"] * 4


def test_call_ids_increase_and_leg_ids_are_unique() -> None:
    calls = list(iter_calls(records=2_000, seed=6))
    first_ids = [call.records[0].cdr["globalCallID_callId"] for call in calls]
    assert first_ids == sorted(first_ids)
    legs = [
        r.cdr["origLegCallIdentifier"] for c in calls if c.scenario == "answered" for r in c.records
    ]
    assert len(set(legs)) == len(legs)


def test_missed_calls_never_connect_and_cover_abandoned_no_answer_and_busy() -> None:
    kinds = Counter()
    for call in iter_calls(records=1_000, mix={"missed": 1}):
        (record,) = call.records
        row = record.cdr
        assert row["dateTimeConnect"] == 0 and row["duration"] == 0
        assert str(row["finalCalledPartyNumber"]).isdigit()  # one of our users missed it
        causes = (row.get("origCause_value", 0), row.get("destCause_value", 0))
        if causes == (16, 0):
            assert row["origCallTerminationOnBehalfOf"] == 12
        kinds[causes] += 1
    assert set(kinds) == {(16, 0), (0, 19), (0, 17)}


def test_answered_calls_connect_and_clear_normally() -> None:
    for call in iter_calls(records=300, mix={"answered": 1}):
        row = call.records[0].cdr
        assert row["dateTimeConnect"] and row["duration"] > 0
        assert (row.get("origCause_value", 0), row.get("destCause_value", 0)) in ((16, 0), (0, 16))


def test_busy_calls_report_user_busy() -> None:
    for call in iter_calls(records=300, mix={"busy": 1}):
        row = call.records[0].cdr
        assert row["dateTimeConnect"] == 0
        assert row["destCause_value"] in (17, 1174405137)


def test_voicemail_calls_are_forwarded_on_no_answer_to_the_pilot() -> None:
    for call in iter_calls(records=100, mix={"voicemail": 1}):
        row = call.records[0].cdr
        assert row["dateTimeConnect"] and row["finalCalledPartyNumber"] == "8000"
        assert row["originalCalledPartyNumber"] == row["lastRedirectDn"] != "8000"
        assert row["origCalledPartyRedirectReason"] == row["lastRedirectRedirectReason"] == 2
        assert row["origCalledPartyRedirectOnBehalfOf"] == 5


def test_transferred_calls_give_three_cdrs_split_on_behalf_of_transfer(tmp_path: Path) -> None:
    files = generate(tmp_path, records=300, mix={"transferred": 1}, seed=8)
    rows = read(files[0])[2]
    assert len(rows) == 300
    split = [r for r in rows if r["origCause_value"] == r["destCause_value"] == "393216"]
    final = [r for r in rows if r["joinOnBehalfOf"] == "10"]
    assert len(split) == 200 and len(final) == 100
    assert all(r["origCallTerminationOnBehalfOf"] == "10" for r in split)
    for call in iter_calls(records=30, mix={"transferred": 1}, seed=8):
        original, consult, last = (record.cdr for record in call.records)
        assert last["globalCallID_callId"] == original["globalCallID_callId"]
        assert last["origLegCallIdentifier"] == original["origLegCallIdentifier"]
        assert last["destLegIdentifier"] == consult["destLegIdentifier"]
        assert last["lastRedirectDn"] == original["finalCalledPartyNumber"]


def test_conferences_join_legs_to_a_bridge_then_leave_two_parties() -> None:
    for call in iter_calls(records=60, mix={"conference": 1}, seed=9):
        rows = [record.cdr for record in call.records]
        assert len(rows) == 6
        bridge = [r for r in rows if str(r["finalCalledPartyNumber"]).startswith("b00")]
        assert len(bridge) == 3
        assert {r["joinOnBehalfOf"] for r in bridge} == {4}
        assert len({r["destConversationId"] for r in bridge}) == 1
        assert all(str(r["comment"]).startswith("ConfControllerDn=") for r in bridge)
        final = rows[-1]
        assert final["joinOnBehalfOf"] == 4 and not str(final["finalCalledPartyNumber"]).startswith(
            "b"
        )


# The call-assembly scenarios, checked against the "CDR Examples" chapter of Cisco's CDR guide
# (Release 14 guide; the values quoted in each test are the guide's).
NEW_SCENARIOS = ("blind_transfer", "hunt_no_answer", "hunt_answered", "immediate_divert")
HUNT_PILOT = "8100"
SPLIT = 393216


def causes(row: dict[str, object]) -> tuple[object, object]:
    return row.get("origCause_value", 0), row.get("destCause_value", 0)


def test_a_seed_gives_the_same_bytes_as_before_the_new_scenarios(tmp_path: Path) -> None:
    # Digest of generate(records=300, cmr=True, seed=1) made with the generator before blind
    # transfers, hunt pilots, iDivert, nodes and mos existed: README's benchmark figures were
    # measured on seeded files, and a new scenario must not silently change them.
    expected = {
        "cdr_StandAloneCluster_01_202501060800_1": (
            "5a01e877e58176ea9cc5bc518a3ab33ac40117ddd7c1a2dcba2c1590d016c187"
        ),
        "cmr_StandAloneCluster_01_202501060800_1": (
            "590658bc8395ae5ca1ba2aafa9f07068f4ce1278495303770aa5fb3d555aa454"
        ),
    }
    files = generate(tmp_path, records=300, cmr=True, seed=1)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == expected


def test_blind_transfers_give_three_cdrs_and_the_consultation_never_connects() -> None:
    for call in iter_calls(records=90, mix={"blind_transfer": 1}, seed=10, cmr=True):
        assert call.scenario == "blind_transfer"
        original, consult, final = (record.cdr for record in call.records)
        # Blind Transfer From the Called Party: 200 -> 201, 202 -> 203, final 200 -> 203,
        # call ids 1, 2, 1.
        assert final["globalCallID_callId"] == original["globalCallID_callId"]
        assert consult["globalCallID_callId"] != original["globalCallID_callId"]
        assert final["origLegCallIdentifier"] == original["origLegCallIdentifier"]
        assert final["destLegIdentifier"] == consult["destLegIdentifier"]
        assert consult["origLegCallIdentifier"] not in (
            original["origLegCallIdentifier"],
            original["destLegIdentifier"],
        )
        for split in (original, consult):
            assert causes(split) == (SPLIT, SPLIT)
            assert split["origCallTerminationOnBehalfOf"] == 10
            assert split["destCallTerminationOnBehalfOf"] == 10
            assert split.get("joinOnBehalfOf", 0) == 0
        # Blind: the consultation leg has duration 0, never connected, and no CMR.
        assert consult["dateTimeConnect"] == 0 and consult["duration"] == 0
        assert call.records[1].cmrs == ()
        assert original["dateTimeConnect"] and final["dateTimeConnect"]
        assert final["joinOnBehalfOf"] == 10 and causes(final) in ((16, 0), (0, 16))
        # The transferor is the last redirecting number; the target was called.
        assert final["lastRedirectDn"] == original["finalCalledPartyNumber"]
        assert final["lastRedirectDn"] == consult["callingPartyNumber"]
        assert final["finalCalledPartyNumber"] == consult["finalCalledPartyNumber"]
        assert final["callingPartyNumber"] == original["callingPartyNumber"]
        assert original["dateTimeDisconnect"] == consult["dateTimeDisconnect"]
        assert final["dateTimeOrigination"] == consult["dateTimeDisconnect"]


def test_a_hunt_pilot_nobody_answers_is_one_unconnected_cdr_with_pattern_usage_7(
    tmp_path: Path,
) -> None:
    calls = list(iter_calls(records=50, mix={"hunt_no_answer": 1}, seed=11))
    for call in calls:
        (record,) = call.records
        row = record.cdr
        assert row["dateTimeConnect"] == 0 and row["duration"] == 0 and record.cmrs == ()
        # "If the call is not answered by any of the hunt group members, the
        # finalCalledPartyNumber field shows the hunt pilot DN", huntPilotDN stays empty.
        assert row["originalCalledPartyNumber"] == row["finalCalledPartyNumber"] == HUNT_PILOT
        assert row["calledPartyPatternUsage"] == 7 and row["huntPilotDN"] == ""
        assert str(row["destDeviceName"]).startswith("SEP")  # the member it was offered to
        assert causes(row) == (16, 0) and row["origCallTerminationOnBehalfOf"] == 12
    (path,) = generate(tmp_path, records=20, mix={"hunt_no_answer": 1}, seed=11)
    for written in read(path)[2]:
        assert written["calledPartyPatternUsage"] == "7"
        assert written["huntPilotDN"] == written["huntPilotPattern"] == ""


def test_a_hunt_member_who_answers_is_named_and_the_pilot_is_in_hunt_pilot_dn() -> None:
    for call in iter_calls(records=50, mix={"hunt_answered": 1}, seed=12, cmr=True):
        (record,) = call.records
        row = record.cdr
        assert row["dateTimeConnect"] and row["duration"] > 0
        assert row["originalCalledPartyNumber"] == HUNT_PILOT
        assert row["huntPilotDN"] == row["huntPilotPattern"] == HUNT_PILOT
        member = row["finalCalledPartyNumber"]
        assert member != HUNT_PILOT and str(member).isdigit()
        assert row["calledPartyPatternUsage"] == 7
        assert any(cmr["directoryNum"] == member for cmr in record.cmrs)


def test_immediate_divert_while_ringing_is_one_cdr_and_once_answered_two() -> None:
    shapes = Counter()
    for call in iter_calls(records=200, mix={"immediate_divert": 1}, seed=13):
        rows = [record.cdr for record in call.records]
        diverted = rows[-1]
        assert diverted["finalCalledPartyNumber"] == "8000"  # the voicemail pilot
        assert diverted["originalCalledPartyNumber"] == diverted["lastRedirectDn"] != "8000"
        assert diverted["origCalledPartyRedirectReason"] == 50
        assert diverted["lastRedirectRedirectReason"] == 50
        assert diverted["origCalledPartyRedirectOnBehalfOf"] == 14
        assert diverted["lastRedirectRedirectOnBehalfOf"] == 14
        assert diverted["joinOnBehalfOf"] == 14
        assert causes(diverted) == (16, 0) and diverted["dateTimeConnect"]
        if len(rows) == 1:
            # IDivert during Alerting: 16777327 -> 16777329, the ringing leg gets no CDR.
            assert diverted["destLegIdentifier"] == diverted["origLegCallIdentifier"] + 2
        else:
            # IDivert during Connect: both CDRs call id 38, 16777330 -> 16777331 then
            # 16777330 -> 16777332; the connected one ends 0/0 on behalf of iDivert.
            original = rows[0]
            assert original["globalCallID_callId"] == diverted["globalCallID_callId"]
            assert original["origLegCallIdentifier"] == diverted["origLegCallIdentifier"]
            assert original["destLegIdentifier"] != diverted["destLegIdentifier"]
            assert original["dateTimeConnect"] and causes(original) == (0, 0)
            assert original["origCallTerminationOnBehalfOf"] == 14
            assert original["destCallTerminationOnBehalfOf"] == 14
            assert original["finalCalledPartyNumber"] == diverted["originalCalledPartyNumber"]
            assert diverted["origCallTerminationOnBehalfOf"] == 14
            assert diverted["destCallTerminationOnBehalfOf"] == 12
        shapes[len(rows)] += 1
    assert set(shapes) == {1, 2}


def test_new_scenarios_are_drawn_only_when_the_mix_names_them() -> None:
    assert all(DEFAULT_MIX[name] == 0 for name in NEW_SCENARIOS)
    mixed = Counter(c.scenario for c in iter_calls(records=2_000, mix=dict.fromkeys(SCENARIOS, 1)))
    assert set(mixed) == set(SCENARIOS)
    calls = list(iter_calls(records=7, mix={"immediate_divert": 1}, seed=13))
    assert sum(len(call.records) for call in calls) == 7  # exact even at 1 or 2 rows a call


def vq_keys(cmr: dict[str, str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in cmr["varVQMetrics"].split(";"))


def test_cmrs_with_and_without_mos(tmp_path: Path, samples: Path) -> None:
    # Real key sets: 12.5+ phones send MLQK/MLQKav/MLQKmn..., many others only Ver=0.90 keys.
    real = {
        frozenset(vq_keys(row))
        for path in samples.glob("cucm1*/cmr_*")
        for row in read(path)[2]
        if ";" in row["varVQMetrics"]
    }
    phone = rows_of(generate(tmp_path / "phone", records=500, cmr=True, seed=14), "cmr")
    kinds = {frozenset(vq_keys(row)) for row in phone}
    assert kinds == real  # both shapes, each with exactly the real keys
    none = rows_of(generate(tmp_path / "none", records=300, cmr=True, seed=14, mos="none"), "cmr")
    assert none and not any("MLQK" in row["varVQMetrics"] for row in none)
    assert all(vq_keys(row)["Ver"] == "0.90" for row in none)
    low = rows_of(generate(tmp_path / "low", records=300, cmr=True, seed=14, mos=2.9), "cmr")
    assert low
    for row in low:
        keys = vq_keys(row)
        assert keys["MLQK"] == keys["MLQKav"] == keys["MLQKmn"] == keys["MLQKmx"] == "2.9000"
    values = [
        vq_keys(cmr)["MLQKmn"] for cmr in one_call("answered", seed=14, mos=3.2).records[0].cmrs
    ]
    assert values and set(values) == {"3.2000"}
    for bad in (0.5, 5.5, "low", True):
        with pytest.raises(ValueError, match="mos"):
            one_call("answered", mos=bad)  # type: ignore[arg-type]


def node_of(path: Path) -> int:
    match = NAME_RE.match(path.name)
    assert match
    return int(match["node"])


def test_two_nodes_write_each_leg_into_the_files_of_the_node_that_handled_it(
    tmp_path: Path,
) -> None:
    files = generate(
        tmp_path, records=600, mix={"transferred": 1}, cmr=True, seed=15, nodes=2, node=4
    )
    assert {node_of(p) for p in files} == {4, 5}
    where: dict[str, int] = {}  # destLegIdentifier -> node of the file, for the split legs
    finals = []
    for path in files:
        for row in read(path)[2]:
            assert int(row["globalCallID_callManagerId"]) == node_of(path)
            if path.name.startswith("cmr"):
                continue
            if row["joinOnBehalfOf"] == "10":
                finals.append((row, node_of(path)))
            else:
                where[row["destLegIdentifier"]] = node_of(path)
    # A consultation leg is started by the transferring phone, whose node writes it.
    split = [(row, node) for row, node in finals if where[row["destLegIdentifier"]] != node]
    assert len(finals) == 200 and 0 < len(split) < len(finals)
    assert sum(len(read(p)[2]) for p in files if p.name.startswith("cdr")) == 600
    with pytest.raises(ValueError, match="outside nodes"):
        write_calls(tmp_path / "other", iter_calls(records=30, seed=15, nodes=2), node=2, nodes=2)
    with pytest.raises(ValueError, match="nodes"):
        generate(tmp_path / "bad", records=1, node=99, nodes=2)


def test_one_call_gives_a_chosen_call_to_write_in_any_split_and_order(tmp_path: Path) -> None:
    call = one_call("transferred", seed=3, nodes=2, start=datetime(2025, 3, 1, 9, 0, tzinfo=UTC))
    assert isinstance(call, Call) and call.scenario == "transferred" and len(call.records) == 3
    assert call == one_call("transferred", seed=3, nodes=2, start=datetime(2025, 3, 1, 9, 0))
    assert call.start == int(datetime(2025, 3, 1, 9, 0, tzinfo=UTC).timestamp())
    original, consult, final = call.records
    assert original.cdr["globalCallID_callManagerId"] == 1
    assert consult.cdr["globalCallID_callManagerId"] == 2  # this seed's agent is on node 2
    # The consultation leg alone in node 2's file, written first; the rest in node 1's later.
    when = datetime.fromtimestamp(call.start, UTC)
    late = file_name("cdr", cluster="StandAloneCluster", node=1, when=when, seq=9)
    early = file_name("cdr", cluster="StandAloneCluster", node=2, when=when, seq=1)
    write_file(tmp_path / early, "cdr", [consult.cdr])
    write_file(tmp_path / late, "cdr", [original.cdr, final.cdr])
    assert [row["destLegIdentifier"] for row in read(tmp_path / early)[2]] == [
        str(final.cdr["destLegIdentifier"])
    ]
    with pytest.raises(ValueError, match="unknown scenario"):
        one_call("parked")


@pytest.mark.django_db
def test_the_new_scenarios_and_two_node_files_ingest(tmp_path: Path) -> None:
    mix = dict.fromkeys(SCENARIOS, 1)
    files = generate(tmp_path, records=400, mix=mix, cmr=True, seed=16, nodes=2, mos=2.9)
    cdrs = cmrs = 0
    for path in files:
        stored = cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
        assert stored.status == CdrFile.Status.DONE, stored.error
        assert stored.rejected_count == 0
        if path.name.startswith("cdr"):
            cdrs += stored.stored_count
        else:
            cmrs += stored.stored_count
    assert Cdr.objects.count() == cdrs == 400 and Cmr.objects.count() == cmrs > 0
    assert {cmr.vq_metrics["MLQKmn"] for cmr in Cmr.objects.all()} == {"2.9000"}
    usages = {cdr.fields["calledPartyPatternUsage"] for cdr in Cdr.objects.all()}
    assert {"2", "5", "7"} <= usages  # hunt pilot calls among device and route calls


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        generate(tmp_path, records=1, mix={"ringing": 1})
    with pytest.raises(ValueError, match="generation"):
        generate(tmp_path, records=1, generation=120)
    with pytest.raises(ValueError, match="cluster"):
        generate(tmp_path, records=1, cluster="../x")
    assert list(tmp_path.iterdir()) == []


def test_command_writes_files_and_reports_counts(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command(
        "generate_cdr",
        str(tmp_path),
        "--records",
        "50",
        "--mix",
        "answered=1,missed=1",
        "--cmr",
        "--generation",
        "129",
        "--node",
        "3",
        "--cluster",
        "Lab",
        "--seed",
        "2",
        "--records-per-file",
        "25",
        stdout=out,
    )
    text = out.getvalue()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4 and all(str(p) in text for p in files)
    assert all(NAME_RE.match(p.name) and "_Lab_03_" in p.name for p in files)
    assert re.search(r"answered: \d+ calls", text) and "conference: 0 calls" in text
    assert len(read(files[0])[0]) == 129


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--records", "5", "--mix", "ringing=1"], "ringing"),
        (["--records", "5", "--mix", "answered"], "scenario=weight"),
        (["--records", "5", "--generation", "120"], "118, 129 or 133"),
        (["--records", "-1"], ">= 0"),
        (["--records", "5", "--node", "100"], "node"),
    ],
)
def test_command_refuses_bad_arguments(tmp_path: Path, arguments: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("generate_cdr", str(tmp_path / "out"), *arguments)
    assert not (tmp_path / "out").exists()
