"""Calls for the API and admin tests: legs ingested from a written CDR file, calls built on
them with known facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdr.models import Call, Cdr, Cmr
from cdr.services import cdr_file_ingest
from tests.test_webhooks import reference_row, write_cdr_file

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
CMR_SAMPLE = "cucm15-sieteunoseis/cmr_cucmOHSUtest_02_202504181632_1"


def leg(n: int, calling: str, called: str, final: str, *, connected: bool) -> dict[str, str]:
    """A leg (CDR row) with its own pkid, global call id and leg ids."""
    start = int((T0 + timedelta(minutes=n)).timestamp())
    row = reference_row()
    row.update(
        pkid=f"00000000-0000-4000-8000-{n:012d}",
        globalCallID_callId=str(9000 + n),
        origLegCallIdentifier=str(90000 + 2 * n),
        destLegIdentifier=str(90001 + 2 * n),
        callingPartyNumber=calling,
        originalCalledPartyNumber=called,
        finalCalledPartyNumber=final,
        lastRedirectDn=called,
        dateTimeOrigination=str(start),
        dateTimeConnect=str(start + 5) if connected else "0",
        dateTimeDisconnect=str(start + 65),
        duration="60" if connected else "0",
    )
    return row


@dataclass
class Calls:
    transferred: Call  # 1001 → 2000, answered by 3000 after a transfer, MOS 2.9, 2 CMRs
    missed: Call  # 1002 → 2001, never connected
    voicemail: Call  # 1003 → 2002, reached voicemail 8000, cluster West, still open
    merged: Call  # half of `transferred`, merged into it


def calls_build(tmp_path: Path, samples: Path) -> Calls:
    rows = [
        leg(1, "1001", "2000", "2000", connected=True),
        leg(2, "2000", "3000", "3000", connected=True),
        leg(3, "1002", "2001", "2001", connected=False),
        leg(4, "1003", "2002", "8000", connected=True),
    ]
    path = write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202611300900_1", rows)
    cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
    cdr_file_ingest(path=samples / CMR_SAMPLE, source="replay", evaluate_webhooks=False)
    legs = {int(c.pkid[-12:]): c for c in Cdr.objects.all()}

    def call(numbers: list[int], minute: int, **facts: object) -> Call:
        settled = facts.pop("settled", True)
        made = Call.objects.create(
            cluster=facts.pop("cluster", "StandAloneCluster"),
            call_manager_id=1,
            call_id=9000 + numbers[0],
            first_arrival_at=T0,
            last_arrival_at=T0,
            settled_at=T0 + timedelta(minutes=5) if settled else None,
            started_at=T0 + timedelta(minutes=minute),
            ended_at=T0 + timedelta(minutes=minute + 1),
            legs=len(numbers),
            **facts,
        )
        Cdr.objects.filter(pk__in=[legs[n].pk for n in numbers]).update(call_ref=made)
        return made

    transferred = call(
        [1, 2],
        1,
        answered=True,
        transferred=True,
        duration=120,
        caller="1001",
        dialed="2000",
        answered_by="3000",
        mos_min=2.9,
        cmr_count=2,
    )
    Cmr.objects.filter(pk__in=Cmr.objects.order_by("id").values("id")[:2]).update(
        call_ref=transferred
    )
    return Calls(
        transferred=transferred,
        missed=call([3], 3, missed=True, caller="1002", dialed="2001", cause=16),
        voicemail=call(
            [4],
            4,
            missed=True,
            voicemail=True,
            caller="1003",
            dialed="2002",
            answered_by="8000",
            mos_min=4.2,
            cluster="West",
            settled=False,
        ),
        merged=Call.objects.create(
            cluster="StandAloneCluster",
            first_arrival_at=T0,
            last_arrival_at=T0,
            settled_at=T0,
            started_at=T0,
            caller="1001",
            merged_into=transferred,
        ),
    )
