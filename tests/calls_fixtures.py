"""Calls for the API and admin tests, made the real way: CDR and CMR files ingested (call
assembly) and settled by `calls_settle`.

- a consultation transfer ("Transferred Calls" in Cisco's CDR examples): 1001 calls 2000
  (global call id 101, legs 1/2), 2000 consults 3000 (id 102, legs 3/4), and the
  transferred call 1001 ↔ 3000 (id 101, legs 1/4) arrives in a later file and joins the
  two: one of the two calls is merged into the other; two CMRs, the worst MOS 2.9;
- a missed call 1002 → 2001 that never connected;
- a call 1003 → 2002 that reached voicemail 8000, cluster West, one CMR with MOS 4.2;
- a call 1004 → 2003 still open (not settled: no facts yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cdr.calls import calls_settle
from cdr.fields import CMR_FIELDS, header
from cdr.models import Call
from cdr.services import cdr_file_ingest
from tests.test_webhooks import reference_row, write_cdr_file

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
VOICEMAIL = "8000"
SPLIT = "393216"  # the cause of a leg a transfer split
TRANSFER = "10"  # OnBehalfOf: transfer


def leg(
    n: int,
    calling: str,
    called: str,
    final: str,
    *,
    connected: bool,
    call_id: int | None = None,
    legs: tuple[int, int] | None = None,
    **fields: str,
) -> dict[str, str]:
    """A CDR row with its own pkid; global call id `call_id` and leg ids `legs` (else ones of
    its own), originated `n` minutes after T0."""
    start = int((T0 + timedelta(minutes=n)).timestamp())
    orig_leg, dest_leg = legs or (90000 + 2 * n, 90001 + 2 * n)
    row = reference_row()
    row.update(
        pkid=f"00000000-0000-4000-8000-{n:012d}",
        globalCallID_callId=str(call_id or 9000 + n),
        origLegCallIdentifier=str(orig_leg),
        destLegIdentifier=str(dest_leg),
        callingPartyNumber=calling,
        originalCalledPartyNumber=called,
        finalCalledPartyNumber=final,
        lastRedirectDn=called,
        dateTimeOrigination=str(start),
        dateTimeConnect=str(start + 5) if connected else "0",
        dateTimeDisconnect=str(start + 65),
        duration="60" if connected else "0",
        origCallTerminationOnBehalfOf="0",  # the reference row's 12 (device) says nothing here
    )
    row.update(fields)
    return row


def cmr(
    n: int, call_id: int, leg_id: int, number: str, mos: str, cluster: str = "StandAloneCluster"
) -> dict[str, str]:
    return {
        "cdrRecordType": "2",
        "globalCallID_callManagerId": "1",
        "globalCallID_callId": str(call_id),
        "nodeId": "1",
        "directoryNum": number,
        "callIdentifier": str(leg_id),
        "dateTimeStamp": str(int((T0 + timedelta(minutes=10)).timestamp())),
        "numberPacketsReceived": "2990",
        "numberPacketsLost": "10",
        "jitter": "7",
        "latency": "2",
        "pkid": f"00000000-0000-4000-9000-{n:012d}",
        "globalCallId_ClusterID": cluster,
        "deviceName": f"SEP00000000{number}",
        "varVQMetrics": f"MLQK={mos};MLQKav={mos};ICR=0.0000;CCR=0.0000",
        "duration": "180",
    }


def write_cmr_file(path: Path, rows: list[dict[str, str]]) -> Path:
    names = header("cmr", 48)
    lines = [",".join(f'"{n}"' for n in names), ",".join(f.type for f in CMR_FIELDS[:48])]
    for values in rows:
        cells = []
        for spec in CMR_FIELDS[:48]:
            value = values.get(spec.name, "")
            cells.append((value or "0") if spec.is_integer else f'"{value}"')
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Calls:
    transferred: Call  # 1001 → 2000, answered by 2000, then transferred to 3000; MOS 2.9
    missed: Call  # 1002 → 2001, never connected
    voicemail: Call  # 1003 → 2002, reached voicemail 8000, cluster West, MOS 4.2
    open: Call  # 1004 → 2003, not settled
    merged: Call  # the half of the transfer merged into `transferred`


def _ingest(path: Path) -> None:
    cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)


def calls_build(tmp_path: Path, settings: Any) -> Calls:
    settings.VOICEMAIL_NUMBERS = frozenset({VOICEMAIL})
    split = {
        "origCause_value": SPLIT,
        "destCause_value": SPLIT,
        "origCallTerminationOnBehalfOf": TRANSFER,
        "destCallTerminationOnBehalfOf": TRANSFER,
    }
    first = [
        leg(1, "1001", "2000", "2000", connected=True, call_id=101, legs=(1, 2), **split),
        leg(2, "2000", "3000", "3000", connected=True, call_id=102, legs=(3, 4), **split),
        leg(3, "1002", "2001", "2001", connected=False),
        leg(4, "1003", "2002", VOICEMAIL, connected=True, globalCallId_ClusterID="West"),
        leg(6, "1004", "2003", "2003", connected=True),
    ]
    _ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202611300900_1", first))
    final = leg(5, "1001", "3000", "3000", connected=True, call_id=101, legs=(1, 4))
    final["joinOnBehalfOf"] = TRANSFER
    _ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_02_202611300905_2", [final]))
    quality = [
        cmr(1, 101, 1, "1001", "2.9000"),
        cmr(2, 101, 4, "3000", "4.1000"),
        cmr(3, 9004, 90009, "1003", "4.2000", cluster="West"),
    ]
    _ingest(write_cmr_file(tmp_path / "cmr_StandAloneCluster_01_202611300910_3", quality))

    def call_of(n: int) -> Call:
        return Call.objects.get(cdr__pkid=f"00000000-0000-4000-8000-{n:012d}")

    transferred, missed, voicemail, open_ = call_of(1), call_of(3), call_of(4), call_of(6)
    calls_settle(call_ids=[transferred.pk, missed.pk, voicemail.pk], force=True)
    for call in (transferred, missed, voicemail):
        call.refresh_from_db()
    return Calls(
        transferred=transferred,
        missed=missed,
        voicemail=voicemail,
        open=open_,
        merged=Call.objects.get(merged_into=transferred),
    )
