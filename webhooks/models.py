"""Webhook definitions, and the durable state of every delivery and attempt."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import Case, F, Q, When

from webhooks.encryption import EncryptedTextField


class WebhookQuerySet(models.QuerySet):
    def delete(self) -> tuple[int, dict[str, int]]:
        """Lock the webhooks, then delete them with their deliveries.

        Deliveries reference their webhook without a database constraint (see
        `Delivery.webhook`). An ingest firing a webhook holds its row locked until it
        commits, so this waits for it and then sees its deliveries; an ingest that comes
        after finds the webhook gone and creates none.
        """
        with transaction.atomic(using=self.db):
            list(self.select_for_update().values_list("pk", flat=True))
            return super().delete()


class Webhook(models.Model):
    class Scope(models.TextChoices):
        RECORD = "record", "record: once per matching CDR"
        CALL = "call", "call: once per matching settled call"

    class Method(models.TextChoices):
        POST = "POST", "POST"
        PUT = "PUT", "PUT"
        PATCH = "PATCH", "PATCH"

    class AuthType(models.TextChoices):  # H-auth
        NONE = "none", "none"
        BASIC = "basic", "Basic (username and password)"
        BEARER = "bearer", "Bearer token"
        OAUTH2 = "oauth2", "OAuth2 client credentials"

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=2000, help_text="http:// or https:// destination")
    enabled = models.BooleanField(default=True)
    scope = models.CharField(
        max_length=8,
        choices=Scope.choices,
        default=Scope.RECORD,
        db_default=Scope.RECORD,
        help_text="record: fire per CDR as it is stored; call: fire once per call when it "
        "settles (call.* conditions, the call's legs and CMRs in the payload)",
    )
    meta = models.JSONField(default=dict, blank=True, help_text="sent under the `meta` key")
    # Encrypted at rest (webhooks.encryption), like every credential below.
    secret = EncryptedTextField(blank=True, help_text="whsec_… signing secret (never shown again)")
    # --- H-auth: signing secret rotation, receiver authentication, TLS ---------------------
    # The secret replaced last, still signing beside `secret` until `previous_secret_until`
    # (WEBHOOK_SECRET_OVERLAP after the change), so receivers can switch without a gap.
    previous_secret = EncryptedTextField(blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    auth_type = models.CharField(
        max_length=8, choices=AuthType.choices, default=AuthType.NONE, db_default=AuthType.NONE
    )
    # H-tmpl (issue 14 item 1): the request's method and body. Empty template: the seed body.
    method = models.CharField(
        max_length=5,
        choices=Method.choices,
        default=Method.POST,
        db_default=Method.POST,
        help_text="HTTP method of every send",
    )
    body_template = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="Jinja2 template of the body (variables cdr, decoded, call, cdrs, cmrs, meta, "
        "name, event_id; filter tojson); empty: the standard JSON body",
    )
    content_type = models.CharField(
        max_length=200,
        default="application/json",
        db_default="application/json",
        help_text="Content-Type header of every send; a JSON type requires the template to "
        "render valid JSON",
    )
    auth_username = models.CharField(max_length=200, blank=True)
    auth_password = EncryptedTextField(blank=True)
    auth_token = EncryptedTextField(blank=True)
    auth_token_url = models.CharField(max_length=2000, blank=True)
    auth_client_id = models.CharField(max_length=200, blank=True)
    auth_client_secret = EncryptedTextField(blank=True)
    auth_scope = models.CharField(max_length=500, blank=True)
    ca_bundle = models.TextField(
        blank=True, help_text="PEM certificates trusted for this receiver, besides the system's"
    )
    client_cert = models.TextField(blank=True, help_text="PEM client certificate (mTLS)")
    client_key = EncryptedTextField(blank=True, help_text="PEM private key of client_cert")
    # --- end H-auth ---------------------------------------------------------------------
    hit_count = models.PositiveBigIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    delivered_count = models.PositiveBigIntegerField(default=0)
    failed_count = models.PositiveBigIntegerField(default=0)
    last_status = models.CharField(max_length=64, blank=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # --- H-state: rate limit, failing / paused (issue 14) ---------------------------------
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="at most this many sends a minute, evenly spaced, across every worker; "
        "empty: unlimited. Deliveries beyond it wait, they are not failed",
    )
    # The earliest moment the next send of a rate-limited webhook may start: each claim
    # that sends one moves it on by 60 / rate_limit_per_minute seconds, in one conditional
    # UPDATE, so every worker of every process shares one spacing (`sql.rate_slot_take`).
    rate_next_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(max_length=200, blank=True, editable=False)
    failing_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="first failure of the current run"
    )
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)

    class State(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        DISABLED = "disabled"

    objects = WebhookQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        with transaction.atomic():
            list(Webhook.objects.select_for_update().filter(pk=self.pk).values_list("pk"))
            return super().delete(*args, **kwargs)

    @property
    def state(self) -> str:
        """Disabled by the operator wins over paused by failures: enabling keeps a paused
        webhook paused until it is resumed."""
        if not self.enabled:
            return self.State.DISABLED
        if self.paused_at is not None:
            return self.State.PAUSED
        return self.State.ACTIVE


class Condition(models.Model):
    class Operator(models.TextChoices):
        EQ = "eq", "equals"
        NE = "ne", "does not equal"
        IN = "in", "is one of"
        NOT_IN = "not_in", "is none of"
        CONTAINS = "contains", "contains"
        NOT_CONTAINS = "not_contains", "does not contain"
        STARTSWITH = "startswith", "starts with"
        ENDSWITH = "endswith", "ends with"
        REGEX = "regex", "matches regex"
        GT = "gt", ">"
        GTE = "gte", "≥"
        LT = "lt", "<"
        LTE = "lte", "≤"
        IS_EMPTY = "is_empty", "is empty"
        IS_NOT_EMPTY = "is_not_empty", "is not empty"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="conditions")
    field = models.CharField(max_length=64, help_text="CDR field name, e.g. dateTimeConnect")
    operator = models.CharField(max_length=16, choices=Operator.choices)
    value = models.JSONField(default=str, blank=True, help_text="text, number or list")
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.field} {self.operator} {self.value}"


class Header(models.Model):
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="headers")
    name = models.CharField(max_length=100)
    # Every header value is treated as a secret (masked in the API, admin and attempt log),
    # so every one is encrypted at rest.
    value = EncryptedTextField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "name"], name="webhook_header_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name}: ••••"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        # H-state: a transient failure, due again at next_attempt_at (reason: why, in words).
        RETRYING = "retrying"
        # H-state: kept, unsent, while its webhook is paused or disabled.
        HELD = "held"

    class Kind(models.TextChoices):
        EVENT = "event"
        TEST = "test"

    # No database-level foreign keys on the two links: their deferred checks cost more at
    # every ingest commit than creating the deliveries. The ORM applies CASCADE and SET_NULL.
    # The trigger links deliveries to records it stored in the same transaction, and only to
    # webhooks whose rows it holds locked; deleting a webhook locks its row first
    # (`WebhookQuerySet.delete`), so no delivery can point at a deleted webhook.
    #
    # Every index here is paid by every match at ingest, so there are few: a webhook's
    # deliveries are found through the leading column of the unique constraint below, a
    # record's through a BRIN index on `cdr_id` (migration 0004: deliveries are created in
    # record order), and the event id needs none (see `event_id`).
    webhook = models.ForeignKey(
        Webhook,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,
    )
    cdr = models.ForeignKey(
        "cdr.Cdr",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,
    )
    # A call-scope webhook's delivery points at its call instead of a record (cdr is NULL),
    # linked the same way and for the same reasons as `cdr`.
    call = models.ForeignKey(
        "cdr.Call",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.EVENT)
    # Unique without an index: the trigger builds it from the delivery's own id (`msg_`, the
    # id in 16 hex digits, 16 random ones: a reinstalled appliance whose ids start again
    # still sends new webhook-ids), others (test sends, call deliveries, SQLite) are `msg_` +
    # a random UUID.
    event_id = models.CharField(max_length=64, help_text="the webhook-id header (unique)")
    body = models.TextField(
        blank=True,
        help_text="the JSON body, exactly as sent and signed; rendered from the record at the "
        "first send and kept for every retry",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(
        max_length=200, blank=True, help_text="why skipped, failed, retrying or held"
    )
    attempt_count = models.PositiveIntegerField(default=0)
    schedule_start = models.PositiveIntegerField(
        default=0, help_text="attempt_count when the retry schedule (re)started"
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Indexed by migration 0004: BRIN on PostgreSQL (rows arrive in time order), b-tree
    # elsewhere.
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]  # newest first: ids grow with creation time
        verbose_name_plural = "deliveries"
        constraints = [
            # A record can never produce two event deliveries for one webhook (test sends of
            # a record are not events: their second column is NULL, and NULLs are
            # distinct). Not partial, so that it also serves every lookup by webhook.
            models.UniqueConstraint(
                F("webhook"),
                Case(When(kind="event", then=F("cdr"))),
                name="delivery_once_per_webhook_and_cdr",
            ),
            # The same for calls: a call settled again (a late leg) or settled by two
            # racing sweeps fires a webhook once, ever. Partial: record deliveries (call
            # NULL) are most rows and need no entry here.
            models.UniqueConstraint(
                F("webhook"),
                F("call"),
                condition=Q(kind="event", call__isnull=False),
                name="delivery_once_per_webhook_and_call",
            ),
        ]
        indexes = [
            # Only unfinished deliveries: the sweeper's index stays small however long the log;
            # it also counts a webhook's backlog (held ones too: they wait to be sent).
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["pending", "retrying", "sending", "held"]),
                name="delivery_due_open",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.webhook_id} ({self.status})"


class DeliveryAttempt(models.Model):
    class ErrorClass(models.TextChoices):
        NONE = "", "none"
        DNS = "dns"
        CONNECT = "connect"
        TLS = "tls"
        TIMEOUT = "timeout"
        HTTP = "http"
        POLICY = "policy"
        TEMPLATE = "template"  # the body template failed: nothing was sent
        AUTH = "auth"  # H-auth: the OAuth2 token endpoint failed

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=12, default="scheduled", help_text="scheduled, manual")
    started_at = models.DateTimeField()
    url = models.URLField(max_length=2000)
    request_headers = models.JSONField(default=dict, help_text="secrets and custom values masked")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error_class = models.CharField(max_length=8, choices=ErrorClass.choices, blank=True)
    error = models.TextField(blank=True)
    response_body = models.TextField(blank=True, help_text="first 4 KB")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
