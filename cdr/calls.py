"""Calls: the CDRs (legs) and CMRs of one conversation, joined as they arrive, settled once
nothing of them has arrived for CALL_SETTLE_SECONDS.

**What one call is** (Cisco CDR Administration Guide, "CDR Examples"):
- records that share CUCM's global call id (`globalCallId_ClusterID` +
  `globalCallID_callManagerId` + `globalCallID_callId`): every CDR of a basic, forwarded or
  hunt-group call, the original and final CDRs of a transfer, and each CMR of those legs
  ("Normal Calls", "Forwarded or Redirected Calls", "Hunt List Support");
- records that share a leg identifier (`origLegCallIdentifier`, `destLegIdentifier`, a CMR's
  `callIdentifier`) with a record of the call: a consultation transfer's consultation call
  has its own global call id, but the transferred call's CDR reuses the leg ids of the
  caller's original leg and of the consulted party's leg ("Transferred Calls"); conference
  legs keep the ids of the legs that joined the bridge ("Conference Calls").
CUCM reuses both ids after a while (callId is 24 bits per node), so a key only joins a
record to a call it was seen on within `KEY_HORIZON` of the record's own time.

Ingest (`CallAssembler`, one per file) joins each batch in the batch's transaction, with a
few set-based statements per batch (lookup of the batch's keys, new calls, key upsert):
union-find over the batch's rows and the calls their keys already name; when a row ties
two existing calls together (the transfer's last leg), the younger is merged into the older.
Only rows that are new touch their call: a CUCM resend changes nothing.

Settling (`calls_settle`, a beat task every few seconds, and `replay_cdr` at its end):
facts are computed from the typed columns of the call's records (`cdr.facts`), stored on
the call, and the registered `CallListener` (call-scope webhooks) is told in the same
transaction. A call whose leg was split by a transfer or conference waits for the leg that
continues it, up to `CONTINUATION_WAIT`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cdr import sql as calls_sql
from cdr.contracts import call_listener
from cdr.facts import FORWARD_REASONS, SPLIT, CallFacts, Leg, awaits_continuation, call_facts
from cdr.models import CallKey
from cdr.parsing import Layout, Row

log = logging.getLogger(__name__)

# A key (global call id or leg id) seen further than this from a record's own time belongs to
# an older call that CUCM's counter has wrapped around to: the record starts a new call.
KEY_HORIZON = 2 * 86400
# How long a call split by a transfer or conference waits for the leg that continues it (the
# transferred call's CDR is written when that conversation ends) before it settles anyway.
CONTINUATION_WAIT = timedelta(hours=4)
SETTLE_BATCH = 2000

_GLOBAL_SHIFT = 1 << 32


def _int(text: str) -> int:
    """A positive CUCM id, or 0 when the field is empty, zero or not a number."""
    if text.isdigit() and len(text) <= 18:
        return int(text)
    return 0


@dataclass(slots=True)
class CallRows:
    """The call keys of one batch's rows, read on the read-ahead thread (no database)."""

    lines: list[int] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    globals: list[tuple[int, int]] = field(default_factory=list)  # (callManagerId, callId)
    legs: list[tuple[int, ...]] = field(default_factory=list)  # leg ids, 0 left out
    times: list[int] = field(default_factory=list)  # origination / CMR stamp, epoch s


class CallAssembler:
    """Joins the records of one file into calls, batch by batch (see the module's docstring)."""

    def __init__(self, layout: Layout, default_cluster: str):
        index = layout.index
        self.kind = layout.kind
        self._cluster_at = index.get("globalCallId_ClusterID")
        self._default_cluster = default_cluster
        self._cm_at = index.get("globalCallID_callManagerId")
        self._call_at = index.get("globalCallID_callId")
        self._leg_at: list[int] = []
        self._codes_at: list[int] = []
        if layout.kind == "cdr":
            self._time_at = index.get("dateTimeOrigination")
            legs = ("origLegCallIdentifier", "destLegIdentifier")
            self._leg_at = [index[name] for name in legs if name in index]
            codes = (
                "origCallTerminationOnBehalfOf",
                "destCallTerminationOnBehalfOf",
                "joinOnBehalfOf",
            )
            self._codes_at = [index[name] for name in codes if name in index]
        else:
            # A CMR carries its leg's global call id: that key is enough.
            self._time_at = index.get("dateTimeStamp")
        self._created: set[int] = set()
        self.touched: set[int] = set()  # every call a new record of this file joined

    def prepare(self, rows: Sequence[Row]) -> CallRows:
        """The rows' keys. A leg id is a key only for a leg a feature ended or joined (a
        termination OnBehalfOf other than 0 and 12 "device", or a joinOnBehalfOf): the legs
        CUCM reuses across global call ids are those of transfers and conferences
        ("Transferred Calls", "Conference Calls"); every other leg is found by its global
        call id, and the key table stays about one row per call."""
        out = CallRows()
        cluster_at, default = self._cluster_at, self._default_cluster
        cm_at, call_at, time_at = self._cm_at, self._call_at, self._time_at
        leg_at, codes_at = self._leg_at, self._codes_at
        plain = ("", "0", "12")
        no_legs: tuple[int, ...] = ()
        for row in rows:
            values = row.values
            out.lines.append(row.line)
            out.clusters.append((values[cluster_at] if cluster_at is not None else "") or default)
            out.globals.append(
                (
                    _int(values[cm_at]) if cm_at is not None else 0,
                    _int(values[call_at]) if call_at is not None else 0,
                )
            )
            featured = any(values[at] not in plain for at in codes_at)
            out.legs.append(
                tuple(leg for at in leg_at if (leg := _int(values[at]))) if featured else no_legs
            )
            out.times.append(_int(values[time_at]) if time_at is not None else 0)
        return out

    def assign(self, batch: CallRows) -> list[int]:
        """The call of each row of `batch` (in its order), creating and merging calls as
        the rows require; in the caller's transaction, before the rows are stored."""
        keys: list[list[tuple[str, int, int]]] = []
        for cluster, (cm, call), legs in zip(
            batch.clusters, batch.globals, batch.legs, strict=True
        ):
            row_keys = [(cluster, CallKey.LEG, leg) for leg in legs]
            if call:
                row_keys.insert(0, (cluster, CallKey.GLOBAL, cm * _GLOBAL_SHIFT + call))
            keys.append(row_keys)
        calls_sql.clusters_lock(sorted(set(batch.clusters)))
        known = calls_sql.keys_find({key for row_keys in keys for key in row_keys})

        # Union-find over rows (0 … n-1) and the existing calls (as -call_id).
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            root = x
            while parent.get(root, root) != root:
                root = parent[root]
            while parent.get(x, x) != root:
                parent[x], x = root, parent[x]
            return root

        def union(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # existing calls (negative) become roots

        first_row: dict[tuple[str, int, int], int] = {}
        for i, (row_keys, when) in enumerate(zip(keys, batch.times, strict=True)):
            for key in row_keys:
                found = known.get(key)
                if found is not None and (not when or abs(when - found[1]) <= KEY_HORIZON):
                    union(i, -found[0])
                j = first_row.setdefault(key, i)
                if j != i:
                    union(i, j)

        roots = [find(i) for i in range(len(keys))]
        # Existing calls that one component ties together: the oldest keeps them all.
        members: dict[int, set[int]] = {}
        for x in list(parent):
            if x < 0:
                members.setdefault(find(x), set()).add(-x)
        merges = []
        for root, calls in members.items():
            target = -root if root < 0 else min(calls)
            merges += [(other, target) for other in calls if other != target]
        if merges:
            calls_sql.calls_merge(merges)
        resolved = {root: -root for root in set(roots) if root < 0}
        for root, calls in members.items():
            if root >= 0:
                resolved[root] = min(calls)
        fresh = sorted({root for root in roots if root not in resolved})
        if fresh:
            now = timezone.now()
            ids = calls_sql.calls_create(
                [(batch.clusters[root], *batch.globals[root]) for root in fresh], now
            )
            resolved.update(zip(fresh, ids, strict=True))
            self._created = set(ids)
        else:
            self._created = set()
        call_of = [resolved[root] for root in roots]

        upsert: dict[tuple[str, int, int], tuple[int, int]] = {}
        for row_keys, when, call in zip(keys, batch.times, call_of, strict=True):
            for key in row_keys:
                seen = upsert.get(key)
                upsert[key] = (call, max(when, seen[1]) if seen else when)
        changed = {
            key: value
            for key, value in upsert.items()
            if (old := known.get(key)) is None
            or old[0] != value[0]
            or value[1] > old[1] + KEY_HORIZON // 4
        }
        if changed:
            calls_sql.keys_upsert(changed)
        return call_of

    def arrived(self, call_ids: Iterable[int]) -> None:
        """The rows stored for this batch joined `call_ids`: stamp their arrival (and open
        them again if they had settled); calls made for rows that were all duplicates go."""
        arrived = set(call_ids)
        arrived.discard(None)  # type: ignore[arg-type]
        # A call made for this batch was stamped when it was made.
        earlier = arrived - self._created
        if earlier:
            calls_sql.calls_arrived(sorted(earlier), timezone.now())
        self.touched |= arrived
        unused = self._created - arrived
        if unused:
            calls_sql.calls_delete(sorted(unused))
        self._created = set()


# --- settling ----------------------------------------------------------------------------


def calls_settle(
    *,
    now: datetime | None = None,
    call_ids: Sequence[int] | None = None,
    force: bool = False,
    limit: int | None = None,
    notify: bool = True,
) -> list[int]:
    """Settle the calls that are due (or `call_ids`, due or not with `force`): compute their
    facts and tell the call listener (unless not `notify`), one transaction per
    `SETTLE_BATCH` calls; the calls settled. Several sweeps may run at once: each call is
    settled by one of them."""
    now = now or timezone.now()
    cutoff = None if force else now - timedelta(seconds=settings.CALL_SETTLE_SECONDS)
    settled: list[int] = []
    pending = sorted(set(call_ids)) if call_ids is not None else None
    while True:
        size = SETTLE_BATCH if limit is None else min(SETTLE_BATCH, limit - len(settled))
        chunk = None
        if pending is not None:
            chunk, pending = pending[:size], pending[size:]
        if size <= 0 or chunk == []:
            break
        with transaction.atomic():
            done, seen = _settle_batch(now, cutoff, size, chunk, force=force)
            settled += done
            listener = call_listener() if notify else None
            if done and listener is not None:
                listener.settled(done)
        if chunk is None and not seen:
            break  # nothing more is due
    return settled


def _settle_batch(
    now: datetime, cutoff: datetime | None, size: int, ids: list[int] | None, *, force: bool
) -> tuple[list[int], int]:
    """One batch, in the caller's transaction: the calls settled with facts, and how many
    calls the batch took up (settled or held)."""
    if connection.vendor == "postgresql":
        return calls_sql.calls_settle_in_one_statement(
            now=now,
            cutoff=cutoff,
            limit=size,
            ids=ids,
            force=force,
            hold_until=now + CONTINUATION_WAIT,
            voicemail=settings.VOICEMAIL_NUMBERS,
            forward_reasons=FORWARD_REASONS,
            split=SPLIT,
        )
    if ids is not None:
        due = calls_sql.calls_lock(ids, cutoff, now)
    else:
        assert cutoff is not None
        due = calls_sql.calls_due(cutoff, now, size)
    return (_settle(due, now, force=force) if due else []), len(due)


def _settle(due: dict[int, bool], now: datetime, *, force: bool) -> list[int]:
    """Settle the calls `due` (id → whether a hold on it has run out); the ids whose facts
    the listener is to see. A call that awaits the leg continuing its transfer or conference
    is held; one with only CMRs (its CDRs may come in a later file) is held too, and once
    its hold runs out it settles without facts and fires nothing."""
    ids = sorted(due)
    legs = calls_sql.legs_of(ids)
    quality = calls_sql.quality_of(ids)
    voicemail = settings.VOICEMAIL_NUMBERS
    facts: list[tuple[int, CallFacts | None]] = []
    held: list[int] = []
    for call_id in ids:
        call_legs: list[Leg] = legs.get(call_id, [])
        expired = force or due[call_id]
        if not expired and (not call_legs or awaits_continuation(call_legs)):
            held.append(call_id)
        elif not call_legs:
            facts.append((call_id, None))
        else:
            facts.append((call_id, call_facts(call_legs, quality.get(call_id, []), voicemail)))
    if held:
        calls_sql.calls_hold(held, now + CONTINUATION_WAIT)
    if facts:
        calls_sql.calls_facts_store(facts, now)
    return [call_id for call_id, found in facts if found is not None]
