"""Realistic CUCM CDR and CMR flat files for tests and benchmarks.

The files look like the ones CUCM pushes to a billing server: CUCM file names, the quoted
name line and the type line of the chosen generation, strings always quoted, unused CDR
integers written as `0` and unused CMR integers left empty. Calls follow the patterns of
the "CDR Examples" chapter of Cisco's CDR guide (see the reference notes): answered,
missed, busy, forwarded to voicemail, consultation and blind transfers (3 CDRs each),
conferenced (6 CDRs), a hunt pilot nobody or a member answers, and Immediate Divert to
voicemail. Everything is drawn from one seeded RNG, so a seed gives byte-identical files,
and rows are streamed to disk.

Layers, from low to high:
- `render_row` turns one row dict (header name → value) into one CUCM CSV line;
- `write_file` writes one complete file from row dicts, e.g. a hand-crafted row in a test;
- `iter_calls` yields calls (scenario + CDR/CMR rows) and `write_calls` files them, with
  `nodes > 1` into the files of the node that handled each leg;
- `generate` does both;
- `one_call` gives one call of a chosen scenario, for a test that writes its own files.
"""

from __future__ import annotations

import bisect
import gzip as gzip_lib
import heapq
import io
import itertools
import operator
import os
import random
import re
import socket
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from cdr.fields import CDR_FIELDS, CMR_FIELDS, header

Row = Mapping[str, object]

SCENARIOS = (
    "answered",
    "missed",
    "busy",
    "voicemail",
    "transferred",
    "conference",
    "blind_transfer",
    "hunt_no_answer",
    "hunt_answered",
    "immediate_divert",
)
DEFAULT_MIX: dict[str, float] = {
    "answered": 60,
    "missed": 15,
    "busy": 5,
    "voicemail": 10,
    "transferred": 5,
    "conference": 5,
    # Weight 0 keeps every seed's files byte-identical to those made before these scenarios
    # existed (benchmarks and tests compare against them); pass `mix` to draw them.
    "blind_transfer": 0,
    "hunt_no_answer": 0,
    "hunt_answered": 0,
    "immediate_divert": 0,
}
# What the CMRs of phones report: "phone" lets each phone's firmware decide (about one in
# five sends MLQK MOS keys, the rest only the Ver=0.90 keys), "none" gives no MOS at all,
# and a number makes every phone report that MOS.
Mos = float | Literal["phone", "none"]
# CDR field count → CMR field count of the same CUCM releases.
CMR_GENERATION = {118: 19, 129: 44, 133: 48}
DEFAULT_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)

_CLUSTER_RE = re.compile(r"[A-Za-z0-9._-]+")
_SPLIT = 393216  # cause "call split": the leg ended because a transfer or conference split it
_VM_PILOT = "8000"
_HUNT_PILOT = "8100"  # outside the 1000-7999 range the phones' extensions come from
_CFNA_TIMER = 12  # CUCM's default Forward No Answer timer, seconds


# ---------------------------------------------------------------------------------------
# Rendering


def _mark_split(rows: Iterable[dict[str, object]], *, on_behalf_of: int) -> None:
    """Legs ended by a transfer (OnBehalfOf 10) or conference (4) carry the split cause."""
    for row in rows:
        row.update(
            origCause_value=_SPLIT,
            destCause_value=_SPLIT,
            origCallTerminationOnBehalfOf=on_behalf_of,
            destCallTerminationOnBehalfOf=on_behalf_of,
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to render rows with one particular key sequence (see `_Layout.render`)."""

    pick: Callable[[Row], tuple[object, ...]]  # the row's values in column order
    template: str  # the line with `%s` where the row has a value
    quotes: int  # number of `"` in the line when no value contains one


@dataclass(frozen=True, slots=True)
class _Layout:
    kind: str
    columns: dict[str, tuple[int, bool]]  # name → (position, is INTEGER)
    defaults: list[str]
    known: frozenset[str]
    head: str
    plans: dict[tuple[str, ...], _Plan]

    def render(self, row: Row) -> str:
        """One line. Rows sharing a key sequence share a `%` template compiled once,
        because a Python loop over ~50 values per row was most of the generator's time.
        Values the template cannot render exactly (None, inner quotes) take the loop."""
        if "pkid" not in row:
            # Every real row has one; a hand-crafted row should not collide with another.
            row = {**row, "pkid": str(uuid.uuid4())}
        keys = tuple(row)
        plan = self.plans.get(keys) or self._plan(keys)
        line = plan.template % plan.pick(row)
        # A None renders as "None" and an inner quote changes the count; both are rare, and
        # a false alarm (a value that really contains "None") only costs the slow path.
        if line.count('"') == plan.quotes and "None" not in line:
            return line
        return self._render_slowly(row)

    def _plan(self, keys: tuple[str, ...]) -> _Plan:
        cells = [cell.replace("%", "%%") for cell in self.defaults]
        present = []
        for name in keys:
            column = self.columns.get(name)
            if column is None:
                self._check(name)
                continue
            i, integer = column
            cells[i] = "%s" if integer else '"%s"'
            present.append((i, name))
        present.sort()
        names = [name for _, name in present]
        if len(names) > 1:
            pick = operator.itemgetter(*names)
        else:

            def pick(row: Row, name: str = names[0]) -> tuple[object, ...]:
                return (row[name],)

        template = ",".join(cells)
        plan = _Plan(pick, template, template.count('"'))
        if len(self.plans) < 256:  # hand-crafted rows in a long test run stay bounded
            self.plans[keys] = plan
        return plan

    def _render_slowly(self, row: Row) -> str:
        cells = self.defaults.copy()
        for name, value in row.items():
            column = self.columns.get(name)
            if column is None:
                self._check(name)
                continue
            i, integer = column
            if integer:
                cells[i] = "" if value is None else str(value)
            else:
                text = "" if value is None else str(value)
                cells[i] = '"' + text.replace('"', '""') + '"'
        return ",".join(cells)

    def _check(self, name: str) -> None:
        """A column newer than this generation is dropped, as older CUCMs never write it."""
        if name not in self.known:
            raise KeyError(f"{name!r} is not a {self.kind.upper()} field")


@cache
def _layout(kind: str, count: int) -> _Layout:
    if kind not in ("cdr", "cmr"):
        raise ValueError(f"kind must be 'cdr' or 'cmr', not {kind!r}")
    names = header(kind, count)
    catalogue = CDR_FIELDS if kind == "cdr" else CMR_FIELDS
    fields = catalogue[:count]
    if kind == "cdr":
        special = {
            "cdrRecordType": "1",
            "origPrecedenceLevel": "4",
            "destPrecedenceLevel": "4",
            # VARCHAR columns that CUCM fills with numeric text even when unused.
            "origRSVPAudioStat": '"0"',
            "origRSVPVideoStat": '"0"',
            "destRSVPAudioStat": '"0"',
            "destRSVPVideoStat": '"0"',
        }
        empty_int = "0"
    else:
        special = {"cdrRecordType": "2"}
        empty_int = ""
    return _Layout(
        kind=kind,
        columns={f.name: (i, f.is_integer) for i, f in enumerate(fields)},
        defaults=[special.get(f.name, empty_int if f.is_integer else '""') for f in fields],
        known=frozenset(f.name for f in catalogue),
        head='"' + '","'.join(names) + '"\n' + ",".join(f.type for f in fields) + "\n",
        plans={},
    )


def render_row(kind: str, count: int, row: Row) -> str:
    """One record as CUCM writes it, without the line end.

    `kind` is "cdr" or "cmr" and `count` the field count of the generation (CDR 118, 129,
    133; CMR 19, 44, 48). Keys are header names; columns left out get CUCM's defaults (CDR
    integers `0`, CMR integers empty, strings `""`, a random pkid). `None` gives an empty
    cell; strings are always quoted with inner quotes doubled. Columns newer than the
    generation are dropped; a name no generation has raises KeyError.
    """
    return _layout(kind, count).render(row)


def file_name(kind: str, *, cluster: str, node: int, when: datetime, seq: int) -> str:
    """`cdr_<cluster>_<node 2 digits>_<yyyymmddhhmm UTC>_<seq>`, as CUCM names its files."""
    stamp = _utc(when).strftime("%Y%m%d%H%M")
    return f"{kind}_{cluster}_{node:02d}_{stamp}_{seq}"


# ---------------------------------------------------------------------------------------
# Writing files


class _FileWriter:
    """One CDR or CMR file, written under `_name` and renamed when complete.

    CUCM marks a file that is still being written with a leading `_` and never transfers
    it; doing the same lets a directory watcher under test see only whole files.
    """

    def __init__(self, path: Path, kind: str, count: int, *, compress: bool, mtime: int):
        self.path = path
        self.layout = _layout(kind, count)
        self.temp = path.with_name("_" + path.name)
        self.raw: BinaryIO = open(self.temp, "wb")
        binary: BinaryIO = self.raw
        if compress:
            # Fixed name and mtime in the gzip header keep seeded output byte-identical.
            binary = gzip_lib.GzipFile(
                filename=path.name.removesuffix(".gz"),
                mode="wb",
                fileobj=self.raw,
                compresslevel=6,
                mtime=mtime,
            )
        self.text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        self.text.write(self.layout.head)
        self.rows = 0

    def write(self, row: Row) -> None:
        self.text.write(self.layout.render(row) + "\n")
        self.rows += 1

    def close(self) -> Path:
        self.text.close()  # closes the gzip stream, which leaves the raw file open
        self.raw.close()
        os.replace(self.temp, self.path)
        return self.path

    def abort(self) -> None:
        self.text.close()
        self.raw.close()
        self.temp.unlink()


def write_file(
    path: Path, kind: str, rows: Iterable[Row], *, count: int | None = None, gzip: bool = False
) -> int:
    """Write one complete CUCM file (name line, type line, rows) to `path`; return the row count.

    `count` is the generation's field count, by default the newest (CDR 133, CMR 48). The
    file appears under its final name only once complete. `gzip` compresses the content;
    the name is used as given.
    """
    count = count or (133 if kind == "cdr" else 48)
    writer = _FileWriter(Path(path), kind, count, compress=gzip, mtime=0)
    try:
        for row in rows:
            writer.write(row)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.rows


# ---------------------------------------------------------------------------------------
# Calls


class Record(NamedTuple):
    """One CDR row and the CMR rows (0–2, one per phone) that belong to it."""

    cdr: dict[str, object]
    cmrs: tuple[dict[str, object], ...]


class Call(NamedTuple):
    scenario: str
    start: int
    records: tuple[Record, ...]


@dataclass(slots=True)  # not frozen: a frozen __init__ is slow and one is made per call
class _Party:
    number: str
    user: str
    device: str
    ip: str
    ip_int: int
    partition: str
    mac: str  # lower-case MAC inside session ids; "" for trunks and bridges
    phone: bool
    sip: bool  # a SIP trunk: span = leg id, protocol SIP with a call reference
    mos: bool  # phone firmware that reports MLQK (MOS) rather than the Ver=0.90 keys
    node: int  # the CUCM node the device registers to; it writes the legs the device starts


@dataclass(frozen=True, slots=True)
class _Codec:
    payload: int
    kbps: int
    octets: int  # per 20 ms packet
    name: str  # VoRxCodec text, cut to 10 characters as phones send it


_CODECS = (
    _Codec(4, 64, 160, "G.711 u-la"),
    _Codec(2, 64, 160, "G.711 A-la"),
    _Codec(16, 8, 20, "G.729 Anne"),
)
_FIRST = ("anna", "ben", "carla", "david", "elena", "farid", "grace", "hugo", "ines", "jonas")
_LAST = ("adams", "berger", "costa", "dubois", "evans", "fischer", "garcia", "huber", "ito")
_EXTERNAL_FORMATS = ("+1{}{:07d}", "+4420{}{:07d}", "+4930{}{:07d}", "+331{}{:07d}")


def _uuid4(bits: int) -> str:
    """A version-4 UUID from 128 random bits; `uuid.UUID` costs several times more."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[bits & 3]}{h[17:20]}-{h[20:]}"


def ip_to_int(ip: str) -> int:
    """CUCM's integer form of an IPv4 address: signed 32-bit, bytes in little-endian order."""
    return struct.unpack("<i", socket.inet_aton(ip))[0]


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class _CallFactory:
    """Builds the CDR/CMR rows of each scenario; holds the cluster's phones and counters."""

    def __init__(
        self,
        rng: random.Random,
        cmr_rng: random.Random | None,
        *,
        cluster: str,
        node: int,
        nodes: int = 1,
        mos: Mos = "phone",
    ):
        self.rng = rng
        self.random = rng.random
        # CMRs draw from their own RNG so that turning them on leaves the CDRs unchanged.
        self.cmr_rng = cmr_rng
        self.cluster = cluster
        self.node = node
        self.nodes = nodes
        self.mos = mos
        extensions = rng.sample(range(1000, 8000), 400)
        self.phones = [self._phone(str(ext)) for ext in extensions]
        self.pstn = self._host("SIP_TRUNK_PSTN", "10.1.1.10", "PSTN")
        self.vm_trunk = self._host("SIP_TRUNK_CUC", "10.1.2.20", "Internal", _VM_PILOT)
        self.bridge = self._host("CFB_2", "10.1.0.11", "")
        self.call_id = rng.randrange(1_000, 8_000_000)
        self.leg_id = rng.randrange(10_000_000, 60_000_000)
        self.conversation = rng.randrange(16_000_000, 17_000_000)

    def _phone(self, number: str) -> _Party:
        rng = self.rng
        mac = f"{rng.getrandbits(48):012X}"
        ip = f"10.{rng.randrange(20, 30)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"
        user = f"{rng.choice(_FIRST)[0]}{rng.choice(_LAST)}" if rng.random() < 0.7 else ""
        return _Party(
            number=number,
            user=user,
            device="SEP" + mac,
            ip=ip,
            ip_int=ip_to_int(ip),
            partition="Internal",
            mac=mac.lower(),
            phone=True,
            sip=False,
            mos=rng.random() < 0.2,
            # Phones spread over the nodes by extension, without an RNG draw, so that a
            # single-node run stays byte-identical.
            node=self.node + int(number) % self.nodes,
        )

    def _host(self, device: str, ip: str, partition: str, number: str = "") -> _Party:
        """Trunks and the conference bridge, on the first node."""
        sip = device.startswith("SIP_")
        return _Party(
            number, "", device, ip, ip_to_int(ip), partition, "", False, sip, False, self.node
        )

    def _external(self) -> _Party:
        pattern = _EXTERNAL_FORMATS[int(self.random() * len(_EXTERNAL_FORMATS))]
        number = pattern.format(self._ring(2, 9), self._ring(0, 9_999_999))
        trunk = self.pstn
        return _Party(
            number, "", trunk.device, trunk.ip, trunk.ip_int, "", "", False, True, False, trunk.node
        )

    def _next_call_id(self) -> int:
        self.call_id = self.call_id % 0xFFFFFF + 1  # 24-bit, wraps to 1 like CUCM's
        return self.call_id

    def _next_leg(self) -> int:
        self.leg_id += 1
        return self.leg_id

    def _pair(self) -> tuple[_Party, _Party]:
        """Caller and callee: internal, inbound from the PSTN or outbound to it."""
        phone = self._any_phone()
        direction = self.random()
        if direction < 0.5:
            other = self._any_phone()
            while other is phone:
                other = self._any_phone()
            return phone, other
        if direction < 0.8:
            return self._external(), phone
        return phone, self._external()

    def _any_phone(self) -> _Party:
        return self.phones[int(self.random() * len(self.phones))]

    def _ring(self, low: int, high: int) -> int:
        """A whole number of seconds in [low, high]; `randint` is slow on this hot path."""
        return low + int(self.random() * (high - low + 1))

    def _talk(self) -> int:
        return 1 + min(int(self.rng.expovariate(1 / 150)), 7200)

    def _session(self, party: _Party, leg: int) -> str:
        return f"{leg & 0xFFFFFFFF:08x}00105000a000{party.mac}" if party.mac else ""

    def _cdr(
        self,
        call_id: int,
        orig: _Party,
        orig_leg: int,
        dest: _Party,
        dest_leg: int,
        *,
        start: int,
        connect: int,
        end: int,
        codec: _Codec,
        manager: int | None = None,
    ) -> dict[str, object]:
        """The fields every leg has; scenarios then set causes, redirects and joins.

        `manager` is the node that allocated `call_id`: by default the node of the device
        that starts this leg, which is the one that started the call id in all but the
        conference's bridge legs."""
        rng = self.rng
        connected = connect != 0
        called = dest.number
        row: dict[str, object] = {
            "globalCallID_callManagerId": orig.node if manager is None else manager,
            "globalCallID_callId": call_id,
            "origLegCallIdentifier": orig_leg,
            "dateTimeOrigination": start,
            "origNodeId": orig.node,
            "origSpan": orig_leg if orig.sip else 0,
            "origIpAddr": orig.ip_int,
            "callingPartyNumber": orig.number,
            "callingPartyUnicodeLoginUserID": orig.user,
            "destLegIdentifier": dest_leg,
            "destNodeId": dest.node,
            "destSpan": dest_leg if dest.sip else 0,
            # CUCM can fill destIpAddr while the ipv4v6 text stays empty on unanswered calls.
            "destIpAddr": dest.ip_int,
            "originalCalledPartyNumber": called,
            "finalCalledPartyNumber": called,
            "finalCalledPartyUnicodeLoginUserID": dest.user,
            "dateTimeConnect": connect,
            "dateTimeDisconnect": end,
            "lastRedirectDn": called,
            "pkid": _uuid4(rng.getrandbits(128)),
            "originalCalledPartyNumberPartition": dest.partition,
            "callingPartyNumberPartition": orig.partition,
            "finalCalledPartyNumberPartition": dest.partition,
            "lastRedirectDnPartition": dest.partition,
            "duration": end - connect if connected else 0,
            "origDeviceName": orig.device,
            "destDeviceName": dest.device,
            "globalCallId_ClusterID": self.cluster,
            "origDTMFMethod": 3 if orig.phone else 2,
            "destDTMFMethod": 3 if dest.phone else 2 if dest.sip else 0,
            "origIpv4v6Addr": orig.ip,
            "destIpv4v6Addr": dest.ip if connected else "",
            "calledPartyPatternUsage": 2 if dest.phone else 5,
            "originalCalledPartyPattern": called if dest.phone else "\\+!",
            "finalCalledPartyPattern": called if dest.phone else "\\+!",
            "lastRedirectingPartyPattern": called if dest.phone else "\\+!",
            "origDeviceSessionID": self._session(orig, orig_leg),
            "destDeviceSessionID": self._session(dest, dest_leg),
        }
        if orig.sip:
            row["IncomingProtocolID"] = 1
            row["IncomingProtocolCallRef"] = f"{rng.getrandbits(128):032X}"
        if dest.sip:
            row["OutgoingProtocolID"] = 1
            row["OutgoingProtocolCallRef"] = f"{rng.getrandbits(128):032X}"
        if connected:
            row.update(
                origMediaTransportAddress_IP=orig.ip_int,
                origMediaTransportAddress_Port=16384 + 2 * int(self.random() * 8192),
                origMediaCap_payloadCapability=codec.payload,
                origMediaCap_maxFramesPerPacket=20,
                destMediaTransportAddress_IP=dest.ip_int,
                destMediaTransportAddress_Port=16384 + 2 * int(self.random() * 8192),
                destMediaCap_payloadCapability=codec.payload,
                destMediaCap_maxFramesPerPacket=20,
                origMediaCap_Bandwidth=codec.kbps,
                destMediaCap_Bandwidth=codec.kbps,
            )
        return row

    def _record(self, row: dict[str, object], orig: _Party, dest: _Party, codec: _Codec) -> Record:
        """Attach one CMR per phone endpoint of a connected leg."""
        if self.cmr_rng is None or not row["dateTimeConnect"]:
            return Record(row, ())
        orig_leg, dest_leg = row["origLegCallIdentifier"], row["destLegIdentifier"]
        assert isinstance(orig_leg, int) and isinstance(dest_leg, int)
        cmrs = []
        if orig.phone:
            cmrs.append(self._cmr(row, orig, orig_leg, self._session(dest, dest_leg), codec))
        if dest.phone:
            cmrs.append(self._cmr(row, dest, dest_leg, self._session(orig, orig_leg), codec))
        return Record(row, tuple(cmrs))

    def _cmr(
        self,
        cdr: dict[str, object],
        party: _Party,
        leg: int,
        remote_session: str,
        codec: _Codec,
    ) -> dict[str, object]:
        rng = self.cmr_rng
        assert rng is not None
        rand = rng.random
        duration = cdr["duration"]
        assert isinstance(duration, int)
        sent = duration * 50 + int(rand() * 6)  # one packet per 20 ms
        received = max(sent - int(rand() * 8), 0)
        lost = int(rand() * 3) if rand() < 0.1 else 0
        jitter = int(rand() * 20)
        concealed = rand() * 0.004
        if self.mos == "phone" and party.mos:
            mos = 4.5 - rand() * 0.9
            metrics = (
                f"MLQK={mos:.4f};MLQKav={mos + 0.03:.4f};MLQKmn={mos - 0.2:.4f};"
                f"MLQKmx={min(mos + 0.1, 4.5):.4f};ICR=0.0000;CCR={concealed:.4f};"
                f"ICRmx={concealed * 3:.4f};CS={int(rand() * 6)};SCS=0;MLQKvr=0.9500"
            )
        elif not isinstance(self.mos, str):
            # One value in every MLQK key, as in the real 12.5 sample row
            # (MLQK=MLQKav=MLQKmn=MLQKmx=3.7002), so a test knows the call's lowest MOS.
            fixed = f"{self.mos:.4f}"
            metrics = (
                f"MLQK={fixed};MLQKav={fixed};MLQKmn={fixed};MLQKmx={fixed};ICR=0.0000;"
                f"CCR={concealed:.4f};ICRmx={concealed * 3:.4f};CS={int(rand() * 6)};SCS=0;"
                "MLQKvr=0.9500"
            )
        else:
            metrics = (
                f"CCR={concealed:.4f};ICR=0.0000;ICRmx={concealed * 3:.4f};"
                f"CS={int(rand() * 6)};SCS=0;Ver=0.90;VoRxCodec={codec.name};"
                f"CID={codec.payload};VoPktSizeMs=20;VoPktLost={lost};VoPktDis=1;"
                f"VoOneWayDelayMs={int(rand() * 8)};maxJitter={jitter + int(rand() * 10)}"
            )
        return {
            "globalCallID_callManagerId": cdr["globalCallID_callManagerId"],
            "globalCallID_callId": cdr["globalCallID_callId"],
            "nodeId": party.node,
            "directoryNum": party.number,
            "callIdentifier": leg,
            "dateTimeStamp": cdr["dateTimeDisconnect"],
            "numberPacketsSent": sent,
            "numberOctetsSent": sent * codec.octets,
            "numberPacketsReceived": received,
            "numberOctetsReceived": received * codec.octets,
            "numberPacketsLost": lost,
            "jitter": jitter,
            "latency": int(rand() * 2),
            "pkid": _uuid4(rng.getrandbits(128)),
            "directoryNumPartition": party.partition,
            "globalCallId_ClusterID": self.cluster,
            "deviceName": party.device,
            "varVQMetrics": metrics,
            "duration": duration,
            "localSessionID": self._session(party, leg),
            "remoteSessionID": remote_session,
        }

    def _hang_up(self, row: dict[str, object], *, caller: bool) -> None:
        """Normal clearing (16) by one side, reported on behalf of the device (12)."""
        side = "orig" if caller else "dest"
        row[f"{side}Cause_value"] = 16
        row[f"{side}CallTerminationOnBehalfOf"] = 12

    @staticmethod
    def _redirected(
        row: dict[str, object], user: _Party, final: _Party, *, reason: int, on_behalf_of: int
    ) -> None:
        """A call to `user` that CUCM redirected once to `final` (a forward, an iDivert): one
        CDR, the redirect's reason and feature in both the first- and last-redirect fields."""
        row.update(
            originalCalledPartyNumber=user.number,
            originalCalledPartyNumberPartition=user.partition,
            lastRedirectDn=user.number,
            lastRedirectDnPartition=user.partition,
            origCalledPartyRedirectReason=reason,
            lastRedirectRedirectReason=reason,
            origCalledPartyRedirectOnBehalfOf=on_behalf_of,
            lastRedirectRedirectOnBehalfOf=on_behalf_of,
            calledPartyPatternUsage=2,
            originalCalledPartyPattern=user.number,
            finalCalledPartyPattern=final.number,
            lastRedirectingPartyPattern=user.number,
        )

    @staticmethod
    def _to_hunt_pilot(row: dict[str, object], member: _Party, *, answered: bool) -> None:
        """A call to the hunt pilot offered to `member` ("Hunt List Support"): pattern usage 7
        (hunt pilot); the pilot is the final number until a member answers, and huntPilotDN
        is set only then. The answered case shows the member's number, as CUCM does with
        *Show Line Group Member DN in finalCalledPartyNumber CDR Field* = True."""
        final = member.number if answered else _HUNT_PILOT
        row.update(
            originalCalledPartyNumber=_HUNT_PILOT,
            finalCalledPartyNumber=final,
            lastRedirectDn=_HUNT_PILOT,
            finalCalledPartyUnicodeLoginUserID=member.user if answered else "",
            calledPartyPatternUsage=7,
            originalCalledPartyPattern=_HUNT_PILOT,
            finalCalledPartyPattern=_HUNT_PILOT,
            lastRedirectingPartyPattern=_HUNT_PILOT,
            huntPilotDN=_HUNT_PILOT if answered else "",
            huntPilotPartition=member.partition if answered else "",
            huntPilotPattern=_HUNT_PILOT if answered else "",
        )

    def _codec(self) -> _Codec:
        r = self.random()
        return _CODECS[0] if r < 0.8 else _CODECS[1] if r < 0.9 else _CODECS[2]

    # -- scenarios --------------------------------------------------------------------

    def answered(self, t: int) -> list[Record]:
        orig, dest = self._pair()
        codec = self._codec()
        connect = t + self._ring(1, 15)
        row = self._cdr(
            self._next_call_id(),
            orig,
            self._next_leg(),
            dest,
            self._next_leg(),
            start=t,
            connect=connect,
            end=connect + self._talk(),
            codec=codec,
        )
        self._hang_up(row, caller=self.random() < 0.5)
        return [self._record(row, orig, dest, codec)]

    def missed(self, t: int) -> list[Record]:
        """Never connected: abandoned while ringing, rang out, or busy (reference §3.9)."""
        orig, dest = self._pair()
        if not dest.phone:
            orig, dest = dest, orig  # a missed call is missed by one of our users
        kind = self.random()
        ring = self._ring(3, 25) if kind < 0.6 else self._ring(20, 60) if kind < 0.85 else 1
        row = self._cdr(
            self._next_call_id(),
            orig,
            self._next_leg(),
            dest,
            self._next_leg(),
            start=t,
            connect=0,
            end=t + ring,
            codec=_CODECS[0],
        )
        if kind < 0.6:
            self._hang_up(row, caller=True)
        elif kind < 0.85:
            row["destCause_value"] = 19
        else:
            row.update(destCause_value=17, destCallTerminationOnBehalfOf=12, destIpAddr=0)
        return [Record(row, ())]

    def busy(self, t: int) -> list[Record]:
        orig, dest = self._pair()
        row = self._cdr(
            self._next_call_id(),
            orig,
            self._next_leg(),
            dest,
            self._next_leg(),
            start=t,
            connect=0,
            end=t + self._ring(0, 2),
            codec=_CODECS[0],
        )
        if dest.phone:
            row.update(destCause_value=17, destCallTerminationOnBehalfOf=12, destIpAddr=0)
        else:
            # The far end answered SIP 486 Busy Here, which CUCM reports in its SIP range.
            row["destCause_value"] = 1174405137
        return [Record(row, ())]

    def voicemail(self, t: int) -> list[Record]:
        """Forward No Answer to the voicemail pilot: one connected CDR to the VM trunk."""
        caller, user = self._pair()
        if not user.phone:
            caller, user = user, caller
        vm = self.vm_trunk
        codec = _CODECS[0]
        connect = t + _CFNA_TIMER + self._ring(0, 1)
        row = self._cdr(
            self._next_call_id(),
            caller,
            self._next_leg(),
            vm,
            self._next_leg(),
            start=t,
            connect=connect,
            end=connect + self._ring(5, 60),
            codec=codec,
        )
        # Redirect reason 2 = Call Forward No Answer, OnBehalfOf 5 = Call Forward.
        self._redirected(row, user, vm, reason=2, on_behalf_of=5)
        self._hang_up(row, caller=True)
        return [self._record(row, caller, vm, codec)]

    def transferred(self, t: int) -> list[Record]:
        """A calls B; B consults C and completes the transfer, leaving A talking to C."""
        caller, agent = self._pair()
        if not agent.phone:
            caller, agent = agent, caller
        target = self._any_phone()
        while target is agent:
            target = self._any_phone()
        codec = self._codec()
        call_id, caller_leg, agent_leg = self._next_call_id(), self._next_leg(), self._next_leg()
        connect = t + self._ring(1, 10)
        consult_start = connect + self._talk()
        consult_connect = consult_start + self._ring(1, 8)
        joined = consult_connect + self._ring(3, 60)
        original = self._cdr(
            call_id,
            caller,
            caller_leg,
            agent,
            agent_leg,
            start=t,
            connect=connect,
            end=joined,
            codec=codec,
        )
        consult_id, agent_leg2, target_leg = (
            self._next_call_id(),
            self._next_leg(),
            self._next_leg(),
        )
        consult = self._cdr(
            consult_id,
            agent,
            agent_leg2,
            target,
            target_leg,
            start=consult_start,
            connect=consult_connect,
            end=joined,
            codec=codec,
        )
        _mark_split((original, consult), on_behalf_of=10)
        final = self._cdr(
            call_id,
            caller,
            caller_leg,
            target,
            target_leg,
            start=joined,
            connect=joined,
            end=joined + self._talk(),
            codec=codec,
        )
        final.update(
            lastRedirectDn=agent.number,
            lastRedirectDnPartition=agent.partition,
            lastRedirectRedirectReason=4,
            lastRedirectRedirectOnBehalfOf=10,
            joinOnBehalfOf=10,
        )
        self._hang_up(final, caller=self.random() < 0.5)
        return [
            self._record(original, caller, agent, codec),
            self._record(consult, agent, target, codec),
            self._record(final, caller, target, codec),
        ]

    def conference(self, t: int) -> list[Record]:
        """A calls B, consults C, joins all three on a bridge; C leaves, A and B go on."""
        host = self._any_phone()
        guest = self._any_phone() if self.random() < 0.6 else self._external()
        while guest is host:
            guest = self._external()
        third = self._any_phone()
        while third is host or third is guest:
            third = self._any_phone()
        codec = _CODECS[0]
        call_id, host_leg, guest_leg = self._next_call_id(), self._next_leg(), self._next_leg()
        connect = t + self._ring(1, 10)
        setup_start = connect + self._talk()
        setup_connect = setup_start + self._ring(1, 8)
        bridged = setup_connect + self._ring(3, 30)
        left = bridged + self._talk()
        original = self._cdr(
            call_id,
            host,
            host_leg,
            guest,
            guest_leg,
            start=t,
            connect=connect,
            end=bridged,
            codec=codec,
        )
        setup_id, host_leg2, third_leg = self._next_call_id(), self._next_leg(), self._next_leg()
        setup = self._cdr(
            setup_id,
            host,
            host_leg2,
            third,
            third_leg,
            start=setup_start,
            connect=setup_connect,
            end=bridged,
            codec=codec,
        )
        _mark_split((original, setup), on_behalf_of=4)
        controller = f"ConfControllerDn={host.number};ConfControllerDeviceName={host.device}"
        bridge_number = f"b00{self.node}9901{self._ring(1, 128):03d}"
        bridge = _Party(
            bridge_number,
            "",
            self.bridge.device,
            self.bridge.ip,
            self.bridge.ip_int,
            "",
            "",
            False,
            False,
            False,
            self.bridge.node,
        )
        self.conversation += 1
        records = [
            self._record(original, host, guest, codec),
            self._record(setup, host, third, codec),
        ]
        for party, leg in ((host, host_leg), (guest, guest_leg), (third, third_leg)):
            row = self._cdr(
                call_id,
                party,
                leg,
                bridge,
                self._next_leg(),
                start=bridged,
                connect=bridged,
                end=left,
                codec=codec,
                manager=host.node,  # the bridge legs carry the original call's id
            )
            row.update(
                origCalledPartyRedirectOnBehalfOf=4,
                lastRedirectRedirectOnBehalfOf=4,
                lastRedirectRedirectReason=98,
                joinOnBehalfOf=4,
                destConversationId=self.conversation,
                comment=controller,
                calledPartyPatternUsage=1,
                originalCalledPartyPattern="",
                finalCalledPartyPattern="",
                lastRedirectingPartyPattern="",
            )
            if party is third:
                self._hang_up(row, caller=True)
            else:
                # Down to two parties: CUCM joins them directly and drops the bridge legs.
                row.update(
                    origCause_value=_SPLIT,
                    destCause_value=_SPLIT,
                    origCallTerminationOnBehalfOf=4,
                    destCallTerminationOnBehalfOf=4,
                )
            records.append(self._record(row, party, bridge, codec))
        final = self._cdr(
            call_id,
            host,
            host_leg,
            guest,
            guest_leg,
            start=left,
            connect=left,
            end=left + self._talk(),
            codec=codec,
        )
        final.update(joinOnBehalfOf=4, comment=controller)
        self._hang_up(final, caller=self.random() < 0.5)
        records.append(self._record(final, host, guest, codec))
        return records

    def blind_transfer(self, t: int) -> list[Record]:
        """A calls B; B transfers to C without waiting for C to answer, then C answers A.

        The guide's "Blind Transfer From the Called Party" example ("Transferred Calls"):
        the same three CDRs as a consultation transfer, but the consultation leg never
        connects (duration 0). Original and consultation end split (393216) on behalf of
        Transfer (10); the final CDR keeps the original's call id, A's leg and the
        consultation's leg to C, and has joinOnBehalfOf 10.
        """
        caller, agent = self._pair()
        if not agent.phone:
            caller, agent = agent, caller
        target = self._any_phone()
        while target is agent:
            target = self._any_phone()
        codec = self._codec()
        call_id, caller_leg, agent_leg = self._next_call_id(), self._next_leg(), self._next_leg()
        connect = t + self._ring(1, 10)
        consult_start = connect + self._talk()
        joined = consult_start + self._ring(2, 6)  # dial C, press Transfer again
        answered = joined + self._ring(2, 15)  # C rings with A already on the line
        original = self._cdr(
            call_id,
            caller,
            caller_leg,
            agent,
            agent_leg,
            start=t,
            connect=connect,
            end=joined,
            codec=codec,
        )
        consult_id, agent_leg2, target_leg = (
            self._next_call_id(),
            self._next_leg(),
            self._next_leg(),
        )
        consult = self._cdr(
            consult_id,
            agent,
            agent_leg2,
            target,
            target_leg,
            start=consult_start,
            connect=0,
            end=joined,
            codec=codec,
        )
        _mark_split((original, consult), on_behalf_of=10)
        final = self._cdr(
            call_id,
            caller,
            caller_leg,
            target,
            target_leg,
            start=joined,
            connect=answered,
            end=answered + self._talk(),
            codec=codec,
        )
        # As in `transferred`: B redirected the call on behalf of Transfer and joined A to C.
        final.update(
            lastRedirectDn=agent.number,
            lastRedirectDnPartition=agent.partition,
            lastRedirectRedirectReason=4,
            lastRedirectRedirectOnBehalfOf=10,
            joinOnBehalfOf=10,
        )
        self._hang_up(final, caller=self.random() < 0.5)
        return [
            self._record(original, caller, agent, codec),
            Record(consult, ()),  # never connected: no media, no CMR
            self._record(final, caller, target, codec),
        ]

    def hunt_no_answer(self, t: int) -> list[Record]:
        """A caller rings the hunt pilot; the members ring in turn, none answers and the caller
        gives up: one never-connected CDR to the pilot with pattern usage 7 and no huntPilotDN
        (the guide's "Abandoned or Failed Calls" hunt example); destDeviceName is the member
        the call was last offered to."""
        caller = self._any_phone() if self.random() < 0.5 else self._external()
        member = self._any_phone()
        while member is caller:
            member = self._any_phone()
        row = self._cdr(
            self._next_call_id(),
            caller,
            self._next_leg(),
            member,
            self._next_leg(),
            start=t,
            connect=0,
            end=t + self._ring(20, 90),
            codec=_CODECS[0],
        )
        self._to_hunt_pilot(row, member, answered=False)
        # The guide's abandoned calls: cause 16 from the caller, 0 on the destination.
        self._hang_up(row, caller=True)
        return [Record(row, ())]

    def hunt_answered(self, t: int) -> list[Record]:
        """A caller rings the hunt pilot and a member answers: one connected CDR with the
        pilot as original called number and in huntPilotDN, the member as final number
        (the guide's "Answered Calls" hunt example)."""
        caller = self._any_phone() if self.random() < 0.5 else self._external()
        member = self._any_phone()
        while member is caller:
            member = self._any_phone()
        codec = self._codec()
        connect = t + self._ring(3, 30)
        row = self._cdr(
            self._next_call_id(),
            caller,
            self._next_leg(),
            member,
            self._next_leg(),
            start=t,
            connect=connect,
            end=connect + self._talk(),
            codec=codec,
        )
        self._to_hunt_pilot(row, member, answered=True)
        self._hang_up(row, caller=self.random() < 0.5)
        return [self._record(row, caller, member, codec)]

    def immediate_divert(self, t: int) -> list[Record]:
        """The called user sends the caller to voicemail with the iDivert softkey.

        "Immediate Divert (to Voice-Messaging System)" in the guide: while ringing (half of
        the calls) one CDR, like a forward but with redirect reason 50 (Call Immediate
        Divert), RedirectOnBehalfOf and joinOnBehalfOf 14 (Immediate Divert); once answered
        two CDRs with the same call id: the connected call, terminated 14/14 with causes
        0/0, and the diverted call, which keeps the caller's leg and adds one to voicemail.
        """
        caller, user = self._pair()
        if not user.phone:
            caller, user = user, caller
        vm = self.vm_trunk
        codec = _CODECS[0]
        call_id, caller_leg, user_leg = self._next_call_id(), self._next_leg(), self._next_leg()
        records = []
        if self.random() < 0.5:
            # Diverted while alerting: the user's ringing leg (user_leg) gets no CDR of its own.
            diverted_at = t + self._ring(2, 10)
        else:
            connect = t + self._ring(1, 10)
            diverted_at = connect + self._ring(5, 120)
            original = self._cdr(
                call_id,
                caller,
                caller_leg,
                user,
                user_leg,
                start=t,
                connect=connect,
                end=diverted_at,
                codec=codec,
            )
            original.update(origCallTerminationOnBehalfOf=14, destCallTerminationOnBehalfOf=14)
            records.append(self._record(original, caller, user, codec))
        vm_connect = diverted_at + self._ring(0, 1)
        diverted = self._cdr(
            call_id,
            caller,
            caller_leg,
            vm,
            self._next_leg(),
            start=t if not records else diverted_at,
            connect=vm_connect,
            end=vm_connect + self._ring(5, 60),
            codec=codec,
        )
        self._redirected(diverted, user, vm, reason=50, on_behalf_of=14)
        diverted["joinOnBehalfOf"] = 14
        self._hang_up(diverted, caller=True)
        if records:
            # The guide's diverted CDR after a connected call: 14 for the caller's side, 12
            # (the voicemail port) for the destination's.
            diverted.update(origCallTerminationOnBehalfOf=14, destCallTerminationOnBehalfOf=12)
        records.append(self._record(diverted, caller, vm, codec))
        return records


# Most CDR rows each scenario produces; used to end exactly on the requested record count.
_ROWS = {
    "answered": 1,
    "missed": 1,
    "busy": 1,
    "voicemail": 1,
    "transferred": 3,
    "conference": 6,
    "blind_transfer": 3,
    "hunt_no_answer": 1,
    "hunt_answered": 1,
    "immediate_divert": 2,
}


def _check_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = sorted(set(mix) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix weights must be >= 0 with a positive total")
    return mix


def _check_target(cluster: str, node: int, nodes: int = 1) -> None:
    if not _CLUSTER_RE.fullmatch(cluster):
        raise ValueError(f"cluster id {cluster!r} must be letters, digits, '.', '_' or '-'")
    if not 1 <= node <= 99:
        raise ValueError(f"node must be 1..99, not {node}")
    if not 1 <= nodes <= 100 - node:
        raise ValueError(f"nodes must be 1..{100 - node} so that node ids stay <= 99, not {nodes}")


def _check_mos(mos: Mos) -> None:
    if isinstance(mos, str):
        if mos not in ("phone", "none"):
            raise ValueError(f"mos must be 'phone', 'none' or a number, not {mos!r}")
    elif isinstance(mos, bool) or not 1.0 <= mos <= 5.0:
        raise ValueError(f"mos must be a MOS between 1 and 5, not {mos!r}")


def _factory(
    seed: int, *, cluster: str, node: int, nodes: int, cmr: bool, mos: Mos
) -> tuple[random.Random, _CallFactory]:
    _check_target(cluster, node, nodes)
    _check_mos(mos)
    rng = random.Random(seed)
    cmr_rng = random.Random(f"{seed}-cmr") if cmr else None
    return rng, _CallFactory(rng, cmr_rng, cluster=cluster, node=node, nodes=nodes, mos=mos)


def iter_calls(
    *,
    records: int,
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    cluster: str = "StandAloneCluster",
    node: int = 1,
    start: datetime | None = None,
    cmr: bool = False,
    nodes: int = 1,
    mos: Mos = "phone",
) -> Iterator[Call]:
    """Calls in start order whose CDR rows add up to exactly `records`.

    The scenario of each call is drawn with the `mix` weights (default `DEFAULT_MIX`); a
    call that would overshoot the count near the end is replaced by an answered call.
    With `cmr` each connected leg carries its CMR rows, whose MOS keys `mos` controls (see
    `Mos`). With `nodes` > 1 the phones register to nodes `node` … `node + nodes - 1` (by
    extension; trunks and the bridge to `node`) and each leg's call id belongs to the node
    of the device that started it, so a transfer's consultation leg can carry another
    node's id. Arguments are checked here, before the first call is drawn.
    """
    if records < 0:
        raise ValueError(f"records must be >= 0, not {records}")
    weights = _check_mix(mix)
    rng, factory = _factory(seed, cluster=cluster, node=node, nodes=nodes, cmr=cmr, mos=mos)
    t = int(_utc(start or DEFAULT_START).timestamp())
    return _calls(factory, rng, records, list(weights), list(weights.values()), t)


def one_call(
    scenario: str,
    *,
    seed: int = 0,
    start: datetime | None = None,
    cluster: str = "StandAloneCluster",
    node: int = 1,
    nodes: int = 1,
    cmr: bool = True,
    mos: Mos = "phone",
) -> Call:
    """One call of `scenario` (one of `SCENARIOS`) starting at `start`, as rows.

    For tests that write exactly the files they want: pass `call.records[i].cdr` and
    `.cmrs` to `write_file`, in any split and order. The same arguments give the same
    rows; `cmr`, `mos`, `node` and `nodes` mean what they mean for `iter_calls`.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    _, factory = _factory(seed, cluster=cluster, node=node, nodes=nodes, cmr=cmr, mos=mos)
    t = int(_utc(start or DEFAULT_START).timestamp())
    return Call(scenario, t, tuple(getattr(factory, scenario)(t)))


def _calls(
    factory: _CallFactory,
    rng: random.Random,
    records: int,
    names: list[str],
    weights: list[float],
    t: int,
) -> Iterator[Call]:
    builders = {name: getattr(factory, name) for name in SCENARIOS}
    bounds = list(itertools.accumulate(weights))
    total = bounds[-1]
    remaining = records
    while remaining > 0:
        # Same draw as rng.choices(names, weights), without its per-call set-up cost.
        scenario = names[bisect.bisect(bounds, rng.random() * total)]
        if _ROWS[scenario] > remaining:
            scenario = "answered"
        rows = builders[scenario](t)
        remaining -= len(rows)
        yield Call(scenario, t, tuple(rows))
        t += int(rng.expovariate(0.5))  # about one new call every 2 s


def write_calls(
    out_dir: Path,
    calls: Iterable[Call],
    *,
    generation: int = 133,
    cmr: bool = False,
    cluster: str = "StandAloneCluster",
    node: int = 1,
    gzip: bool = False,
    records_per_file: int | None = None,
    nodes: int = 1,
) -> list[Path]:
    """Write the calls' rows into CUCM-named files in `out_dir`; return the paths written.

    Rows are written in disconnect order, as CUCM writes a CDR when its leg ends, so call
    ids are not sorted inside a file. A file is named after the UTC minute of its first
    row, at least one minute after the previous file (CUCM writes at most one per minute),
    and its CMR file (`cmr=True`) gets the same minute and sequence number. Without
    `records_per_file` everything goes into one CDR (and one CMR) file per node.

    With `nodes` > 1 (calls from `iter_calls(nodes=...)`), each node `node` … `node +
    nodes - 1` writes its own series of files, named with its id, and a leg goes to the
    node of its `globalCallID_callManagerId` with its CMRs. The paths come node by node,
    each node's in order; a test delivers them in whatever order it wants to check.
    """
    if generation not in CMR_GENERATION:
        raise ValueError(f"generation must be 118, 129 or 133, not {generation}")
    if records_per_file is not None and records_per_file < 1:
        raise ValueError(f"records_per_file must be >= 1, not {records_per_file}")
    _check_target(cluster, node, nodes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series = {
        n: _FileSeries(
            out_dir,
            generation=generation,
            cmr=cmr,
            cluster=cluster,
            node=n,
            compress=gzip,
            records_per_file=records_per_file,
        )
        for n in range(node, node + nodes)
    }

    def write(record: Record) -> None:
        # One node: everything in its files, whatever id the rows carry (as before nodes).
        target = node if nodes == 1 else record.cdr["globalCallID_callManagerId"]
        if not isinstance(target, int) or target not in series:
            raise ValueError(f"a leg of node {target} is outside nodes {node}..{node + nodes - 1}")
        series[target].write(record)

    # Rows of calls still in progress, keyed by disconnect time; bounded by concurrency.
    pending: list[tuple[int, int, Record]] = []
    order = 0
    try:
        for call in calls:
            while pending and pending[0][0] <= call.start:
                write(heapq.heappop(pending)[2])
            for record in call.records:
                order += 1
                end = record.cdr["dateTimeDisconnect"]
                assert isinstance(end, int)
                heapq.heappush(pending, (end, order, record))
        while pending:
            write(heapq.heappop(pending)[2])
    except BaseException:
        for one in series.values():
            one.abort()
        raise
    return [path for one in series.values() for path in one.close()]


class _FileSeries:
    """The sequence of CDR (and CMR) files of one node, rolled every N records."""

    def __init__(
        self,
        out_dir: Path,
        *,
        generation: int,
        cmr: bool,
        cluster: str,
        node: int,
        compress: bool,
        records_per_file: int | None,
    ):
        self.out_dir = out_dir
        self.generation = generation
        self.cmr = cmr
        self.cluster = cluster
        self.node = node
        self.compress = compress
        self.limit = records_per_file
        self.minute = 0
        self.seq = 0
        self.open: list[_FileWriter] = []
        self.done: list[Path] = []

    def write(self, record: Record) -> None:
        if not self.open:
            self._start(record)
        cdr_file = self.open[0]
        cdr_file.write(record.cdr)
        if self.cmr:
            for row in record.cmrs:
                self.open[1].write(row)
        if self.limit is not None and cdr_file.rows >= self.limit:
            self._finish()

    def _start(self, record: Record) -> None:
        end = record.cdr["dateTimeDisconnect"]
        assert isinstance(end, int)
        self.minute = max(end // 60, self.minute + 1)
        self.seq += 1
        when = datetime.fromtimestamp(self.minute * 60, UTC)
        suffix = ".gz" if self.compress else ""
        kinds = [("cdr", self.generation)]
        if self.cmr:
            kinds.append(("cmr", CMR_GENERATION[self.generation]))
        for kind, count in kinds:
            name = file_name(kind, cluster=self.cluster, node=self.node, when=when, seq=self.seq)
            self.open.append(
                _FileWriter(
                    self.out_dir / (name + suffix),
                    kind,
                    count,
                    compress=self.compress,
                    mtime=self.minute * 60,
                )
            )

    def _finish(self) -> None:
        self.done.extend(writer.close() for writer in self.open)
        self.open = []

    def abort(self) -> None:
        for writer in self.open:
            writer.abort()
        self.open = []

    def close(self) -> list[Path]:
        self._finish()
        return self.done


def generate(
    out_dir: Path,
    *,
    records: int,
    generation: int = 133,
    mix: Mapping[str, float] | None = None,
    cmr: bool = False,
    seed: int = 0,
    cluster: str = "StandAloneCluster",
    node: int = 1,
    start: datetime | None = None,
    gzip: bool = False,
    records_per_file: int | None = None,
    nodes: int = 1,
    mos: Mos = "phone",
) -> list[Path]:
    """Write `records` CDR rows (and their CMRs with `cmr=True`) as CUCM files; return paths.

    `generation` is the CDR field count (118, 129 or 133); the CMR file uses the matching
    CMR generation (19, 44, 48). `mix` weighs the scenarios in `SCENARIOS` per call.
    `nodes` and `mos` are those of `iter_calls` and `write_calls`. The same arguments
    always give byte-identical files. Naive `start` means UTC.
    """
    calls = iter_calls(
        records=records,
        mix=mix,
        seed=seed,
        cluster=cluster,
        node=node,
        start=start,
        cmr=cmr,
        nodes=nodes,
        mos=mos,
    )
    return write_calls(
        out_dir,
        calls,
        generation=generation,
        cmr=cmr,
        cluster=cluster,
        node=node,
        gzip=gzip,
        records_per_file=records_per_file,
        nodes=nodes,
    )
