"""Stored CUCM records and the ingest record of every file.

Each record keeps the line exactly as read (`raw`) together with the file's header
(`RecordLayout`), so every field is available under its CUCM header name, whatever the
generation; the columns people search and filter on are also stored typed and indexed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.db import models
from django.db.models import Q

from cdr.codes import cause_text
from cdr.parsing import MAX_EPOCH, int_to_ipv4, parse_vq_metrics, split_line

# The times ingest stores: CUCM's unsigned 32-bit epoch seconds (0 means "never": NULL).
EARLIEST = datetime.fromtimestamp(1, tz=UTC)
LATEST = datetime.fromtimestamp(MAX_EPOCH, tz=UTC)


class RecordTimeField(models.DateTimeField):
    """A time read from a CUCM record, read back as empty when it is outside the range
    ingest stores.

    Older versions stored whatever the file said (epoch -99999999999 is 1200 BC), and a
    time Python cannot represent made every page that loads the record fail; the raw line
    still holds the value as read. The database column is a plain DateTimeField's.
    """

    def select_format(self, compiler: Any, sql: str, params: Any) -> tuple[str, Any]:
        sql, params = super().select_format(compiler, sql, params)
        ops = compiler.connection.ops
        low, high = (ops.adapt_datetimefield_value(v) for v in (EARLIEST, LATEST))
        return (
            f"CASE WHEN {sql} BETWEEN %s AND %s THEN {sql} END",
            (*params, low, high, *params),
        )

    def deconstruct(self) -> Any:
        # Nothing changes in the database: migrations keep seeing a DateTimeField.
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.DateTimeField", args, kwargs


class RecordQuerySet(models.QuerySet):
    """Records. Date drill-downs (the admin's date hierarchy) truncate times in SQL, out of
    `RecordTimeField`'s reach: they list only the times it shows."""

    def _shown(self, field_name: str) -> models.QuerySet:
        if isinstance(self.model._meta.get_field(field_name), RecordTimeField):
            return self.filter(**{f"{field_name}__range": (EARLIEST, LATEST)})
        return self

    def datetimes(self, field_name: str, *args: Any, **kwargs: Any) -> models.QuerySet:
        return models.QuerySet.datetimes(self._shown(field_name), field_name, *args, **kwargs)

    def dates(self, field_name: str, *args: Any, **kwargs: Any) -> models.QuerySet:
        return models.QuerySet.dates(self._shown(field_name), field_name, *args, **kwargs)


class CdrFile(models.Model):
    """The ingest record of one received file."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        DONE = "done"
        DUPLICATE = "duplicate"
        FAILED = "failed"

    class Kind(models.TextChoices):
        CDR = "cdr", "CDR"
        CMR = "cmr", "CMR"
        UNKNOWN = "unknown"

    name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField(default=0)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.UNKNOWN)
    source = models.CharField(max_length=100, help_text="watcher, upload, replay or sftp:<source>")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    cluster = models.CharField(max_length=64, blank=True, db_index=True)
    stored_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, reason}] of rows")
    error = models.TextField(blank=True, help_text="why the file as a whole failed")
    path = models.CharField(max_length=1024, blank=True, help_text="where the file waits")
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "ingest record"

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class RecordLayout(models.Model):
    """One distinct header line: the field names of the records that point at it."""

    kind = models.CharField(max_length=8)
    fields = models.JSONField()
    digest = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return f"{self.kind.upper()} {len(self.fields)} fields"


class Call(models.Model):
    """One conversation: the CDRs (legs) and CMRs that CUCM wrote for it, joined by ingest.

    Ingest attaches every new record to a call (`cdr.calls`) and stamps `last_arrival_at`;
    the settle sweep fills the facts below once nothing of the call has arrived for
    CALL_SETTLE_SECONDS, and tells the apps above (call-scope webhooks). A leg that arrives
    after that opens the call again; it is settled again, with every fact recomputed.
    """

    cluster = models.CharField(max_length=64)
    # CUCM's global call id of the call's first leg (a consultation leg keeps its own).
    call_manager_id = models.IntegerField(null=True, blank=True)
    call_id = models.BigIntegerField(null=True, blank=True)
    first_arrival_at = models.DateTimeField()
    last_arrival_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True, help_text="empty: still open")
    # Set by the sweep for a call that awaits the leg continuing a transfer or conference.
    held_until = models.DateTimeField(null=True, blank=True)
    settle_count = models.PositiveIntegerField(default=0, db_default=0)
    # A call joined into another (a consultation transfer's two halves meet in its last leg).
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    # Facts, as of the last settle (see cdr.calls.call_facts for the rules).
    started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    legs = models.PositiveIntegerField(default=0, db_default=0)
    cmr_count = models.PositiveIntegerField(default=0, db_default=0)
    answered = models.BooleanField(default=False, db_default=False)
    missed = models.BooleanField(default=False, db_default=False)
    voicemail = models.BooleanField(default=False, db_default=False)
    transferred = models.BooleanField(default=False, db_default=False)
    forwarded = models.BooleanField(default=False, db_default=False)
    conference = models.BooleanField(default=False, db_default=False)
    duration = models.IntegerField(
        default=0, db_default=0, help_text="seconds, first connect to last disconnect"
    )
    ring_seconds = models.IntegerField(null=True, blank=True)
    caller = models.CharField(max_length=255, blank=True, default="", db_default="")
    dialed = models.CharField(max_length=255, blank=True, default="", db_default="")
    answered_by = models.CharField(max_length=255, blank=True, default="", db_default="")
    cause = models.BigIntegerField(null=True, blank=True)
    mos_min = models.FloatField(null=True, blank=True)
    jitter_max = models.IntegerField(null=True, blank=True)
    loss_pct = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(
                fields=["last_arrival_at"],
                condition=Q(settled_at__isnull=True),
                name="call_open_by_arrival",
            ),
            # No index on the numbers: each is a number of one of the call's legs, and a
            # search by number goes through the legs' indexes. Every index here is written
            # again when the sweep stores a call's facts.
        ]

    def __str__(self) -> str:
        return f"{self.caller or '?'} → {self.dialed or '?'} ({self.legs} legs)"

    @property
    def cause_text(self) -> str:
        return cause_text(self.cause)


class CallKey(models.Model):
    """What ties a record to its call: CUCM's global call id (kind GLOBAL, number =
    callManagerId × 2³² + callId) or a leg id (kind LEG). CUCM reuses both after a while
    (callId is 24 bits per node), so a key also holds when it was last seen (the record's
    origination, epoch seconds) and a far older key starts a new call."""

    GLOBAL, LEG = 0, 1

    cluster = models.CharField(max_length=64)
    kind = models.SmallIntegerField()
    number = models.BigIntegerField()
    call = models.ForeignKey(Call, on_delete=models.CASCADE, db_constraint=False)
    seen = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "kind", "number"], name="callkey_unique")
        ]

    def __str__(self) -> str:
        return f"{'leg' if self.kind == self.LEG else 'call'} {self.number} → call {self.call_id}"


class Record(models.Model):
    # Ingest sets both from rows it created moments before, and the ORM applies on_delete
    # (SET_NULL, PROTECT) itself; database-level foreign keys would add two deferred checks
    # per record to every ingest commit, a third of the time PostgreSQL spends on a file.
    # `file` is indexed by migration 0003: BRIN on PostgreSQL (ids grow with insertion
    # order, so a few pages index millions of rows), b-tree elsewhere.
    file = models.ForeignKey(
        CdrFile,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        db_index=False,
    )
    layout = models.ForeignKey(
        RecordLayout, on_delete=models.PROTECT, db_constraint=False, db_index=False
    )
    line = models.PositiveIntegerField()
    raw = models.TextField()
    cluster = models.CharField(max_length=64)
    pkid = models.CharField(max_length=64)
    call_manager_id = models.IntegerField(null=True, blank=True)
    call_id = models.BigIntegerField(null=True, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)
    # The call this record belongs to (`cdr.calls`); `call_id` is CUCM's global call id.
    call_ref = models.ForeignKey(
        Call,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
    )

    objects = RecordQuerySet.as_manager()

    class Meta:
        abstract = True

    @cached_property
    def fields(self) -> dict[str, str]:
        """Every field as read, by CUCM header name."""
        return dict(zip(self.layout.fields, split_line(self.raw), strict=False))


class Cdr(Record):
    # Leg ids are indexed by migration 0005: on PostgreSQL ≥ 14 with BRIN minmax-multi (each
    # node's leg ids grow with time, so a block range holds a few tight intervals), b-tree
    # elsewhere.
    orig_leg_id = models.BigIntegerField(null=True, blank=True)
    dest_leg_id = models.BigIntegerField(null=True, blank=True)
    origination_at = RecordTimeField(null=True, blank=True, db_index=True)
    connect_at = RecordTimeField(null=True, blank=True, help_text="empty: never connected")
    disconnect_at = RecordTimeField(null=True, blank=True)
    duration = models.IntegerField(null=True, blank=True)
    calling_party_number = models.CharField(max_length=255, blank=True)
    original_called_party_number = models.CharField(max_length=255, blank=True)
    final_called_party_number = models.CharField(max_length=255, blank=True)
    last_redirect_dn = models.CharField(max_length=255, blank=True)
    orig_device_name = models.CharField(max_length=129, blank=True)
    dest_device_name = models.CharField(max_length=129, blank=True)
    orig_cause_value = models.BigIntegerField(null=True, blank=True)
    dest_cause_value = models.BigIntegerField(null=True, blank=True)
    # What call assembly reads about how the leg began and ended (reference §3.5, §3.6).
    orig_termination_on_behalf_of = models.IntegerField(null=True, blank=True)
    dest_termination_on_behalf_of = models.IntegerField(null=True, blank=True)
    join_on_behalf_of = models.IntegerField(null=True, blank=True)
    orig_redirect_reason = models.IntegerField(null=True, blank=True)
    last_redirect_reason = models.IntegerField(null=True, blank=True)
    orig_redirect_on_behalf_of = models.IntegerField(null=True, blank=True)
    last_redirect_on_behalf_of = models.IntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "CDR"
        ordering = ["-origination_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "pkid"], name="cdr_unique_cluster_pkid")
        ]
        indexes = [
            models.Index(fields=["cluster", "call_manager_id", "call_id"], name="cdr_global_call"),
            # Plain b-tree indexes: exact lookups only, so no extra LIKE (pattern_ops) index.
            models.Index(fields=["calling_party_number"], name="cdr_calling_party_number"),
            models.Index(fields=["original_called_party_number"], name="cdr_original_called_part"),
            models.Index(fields=["final_called_party_number"], name="cdr_final_called_party_n"),
            models.Index(fields=["orig_device_name"], name="cdr_orig_device_name"),
            models.Index(fields=["dest_device_name"], name="cdr_dest_device_name"),
            # Cause values: only the calls that did not end normally (0 = no cause,
            # 16 = normal clearing, most of any file) are indexed, so storing a normal call
            # costs nothing here; a search for 16 reads most of the table anyway.
            models.Index(
                fields=["orig_cause_value"],
                condition=Q(orig_cause_value__gt=16) | Q(orig_cause_value__range=(1, 15)),
                name="cdr_orig_cause_abnormal",
            ),
            models.Index(
                fields=["dest_cause_value"],
                condition=Q(dest_cause_value__gt=16) | Q(dest_cause_value__range=(1, 15)),
                name="cdr_dest_cause_abnormal",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.calling_party_number} → {self.final_called_party_number} ({self.pkid})"

    @property
    def orig_ip(self) -> str | None:
        return self.fields.get("origIpv4v6Addr") or int_to_ipv4(self.fields.get("origIpAddr"))

    @property
    def dest_ip(self) -> str | None:
        return self.fields.get("destIpv4v6Addr") or int_to_ipv4(self.fields.get("destIpAddr"))

    @property
    def orig_cause_text(self) -> str:
        return cause_text(self.orig_cause_value)

    @property
    def dest_cause_text(self) -> str:
        return cause_text(self.dest_cause_value)

    @property
    def answered(self) -> bool:
        return self.connect_at is not None


class Cmr(Record):
    node_id = models.IntegerField(null=True, blank=True)
    directory_num = models.CharField(max_length=255, blank=True)
    call_identifier = models.BigIntegerField(null=True, blank=True, db_index=True)
    stamp_at = RecordTimeField(null=True, blank=True, db_index=True)
    device_name = models.CharField(max_length=129, blank=True)
    duration = models.IntegerField(null=True, blank=True)
    jitter = models.IntegerField(null=True, blank=True)
    latency = models.IntegerField(null=True, blank=True)
    packets_lost = models.BigIntegerField(null=True, blank=True)
    packets_received = models.BigIntegerField(null=True, blank=True)
    # The endpoint's MOS from varVQMetrics: MLQKmn, else MLQKav, else MLQK (empty: none).
    mos = models.FloatField(null=True, blank=True)

    class Meta:
        verbose_name = "CMR"
        ordering = ["-stamp_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "pkid"], name="cmr_unique_cluster_pkid")
        ]
        indexes = [
            models.Index(fields=["cluster", "call_manager_id", "call_id"], name="cmr_global_call"),
            models.Index(fields=["directory_num"], name="cmr_directory_num"),
            models.Index(fields=["device_name"], name="cmr_device_name"),
        ]

    def __str__(self) -> str:
        return f"{self.device_name} {self.directory_num} ({self.pkid})"

    @property
    def vq_metrics(self) -> dict[str, str]:
        return parse_vq_metrics(self.fields.get("varVQMetrics", ""))
