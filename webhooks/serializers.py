"""API bodies for webhooks, deliveries and the CDR field catalogue.

Request serializers only check the shape of a body; what a webhook may be (fields,
operators, values, header rules, limits) is decided by `webhooks.validation`, the same code
the admin uses. Secrets and header values are write-only: on read a header value is the mask
and a secret is only `has_secret`.
"""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from cdr.fields import FieldSpec
from cdr.models import Cdr
from licensing.verification import State
from webhooks.bodies import delivery_body_preview
from webhooks.call_matching import CallFieldSpec
from webhooks.credentials import auth_shown
from webhooks.delivery import MASK
from webhooks.lifecycle import backlog_drain_at, webhook_backlog
from webhooks.matching import field_kind, operators_for
from webhooks.models import Condition, Delivery, DeliveryAttempt, Webhook
from webhooks.operations import (
    DRY_RUN_DEFAULT_LIMIT,
    DRY_RUN_MAX_LIMIT,
    REDELIVERABLE,
    DryRunResult,
)
from webhooks.redaction import text_redacted, url_redacted

_SCALAR = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


@extend_schema_field(
    {
        "oneOf": [*_SCALAR["oneOf"], {"type": "array", "items": _SCALAR}],
        "description": "Text, a whole number, epoch seconds or ISO-8601 for dateTime* fields "
        "(`Never` = 0), or for in/not_in a list or comma-separated text. Omitted for "
        "is_empty/is_not_empty. Call fields: true/false for the booleans, decimals for "
        "call.mosMin and call.lossPct.",
    }
)
class ConditionValueField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "description": f"Write-only. Always `{MASK}` on read; sending `{MASK}` back keeps the "
        "stored value of the header with that name.",
    }
)
class MaskedValueField(serializers.CharField):
    def to_representation(self, value: object) -> str:
        return MASK


def _staff_reader(field: serializers.Field) -> bool:
    """Whether the API caller is staff; a serializer used without a request is (the admin,
    a service)."""
    request = field.context.get("request")
    return request is None or bool(request.user and request.user.is_staff)


@extend_schema_field(
    {
        "type": "string",
        "nullable": True,
        "description": f"The destination with credentials masked (`{MASK}` for userinfo and "
        "secret-looking query parameters); null for users who are not staff",
    }
)
class DestinationField(serializers.Field):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: str) -> str | None:
        return url_redacted(value) if _staff_reader(self) else None


@extend_schema_field({"type": "string"})
class RedactedTextField(serializers.Field):
    """An error text, with any URL credentials in it masked."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: str) -> str:
        return text_redacted(value or "")


@extend_schema_field({"type": "object", "additionalProperties": True})
class MetaField(serializers.JSONField):
    pass


class ConditionSerializer(serializers.Serializer):
    field = serializers.CharField(
        max_length=64,
        help_text="A CDR field name (any case), see /api/v1/cdr-fields/; in call scope also a "
        "call.* field, see /api/v1/cdr-fields/?scope=call",
    )
    operator = serializers.ChoiceField(choices=Condition.Operator.choices)
    value = ConditionValueField(required=False)


class HeaderSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="HTTP header name (token characters)")
    value = MaskedValueField(max_length=8192, allow_blank=True, trim_whitespace=False)


# Items are checked by webhooks.validation, which reports one entry per item ({} when fine);
# DRF's nested-list errors are keyed by index instead, so the items pass through untouched.
@extend_schema_field(ConditionSerializer(many=True))
class ConditionListField(serializers.ListField):
    child = serializers.JSONField()


@extend_schema_field(HeaderSerializer(many=True))
class HeaderListField(serializers.ListField):
    child = serializers.JSONField()


# --- H-auth: the auth object and TLS settings -----------------------------------------------


class AuthSerializer(serializers.Serializer):
    """The shape of `auth` (documentation only: webhooks.credentials checks it)."""

    type = serializers.ChoiceField(
        choices=Webhook.AuthType.choices,
        help_text="none; basic: username + password; bearer: token; oauth2: client "
        "credentials (token_url, client_id, client_secret, optional scope)",
    )
    username = serializers.CharField(required=False, allow_blank=True)
    password = serializers.CharField(
        required=False,
        allow_null=True,
        help_text=f"Write-only: `{MASK}` on read when set (null otherwise); `{MASK}` sent "
        "back keeps the stored one",
    )
    token = serializers.CharField(
        required=False, allow_null=True, help_text=f"Write-only, like password (`{MASK}`)"
    )
    token_url = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="OAuth2 token endpoint, reached under the same destination policy",
    )
    client_id = serializers.CharField(required=False, allow_blank=True)
    client_secret = serializers.CharField(
        required=False, allow_null=True, help_text=f"Write-only, like password (`{MASK}`)"
    )
    scope = serializers.CharField(required=False, allow_blank=True)


@extend_schema_field(AuthSerializer)
class AuthField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "nullable": True,
        "description": f"Write-only PEM private key: `{MASK}` on read when set (null otherwise); "
        f"`{MASK}` sent back keeps the stored key",
    }
)
class MaskedKeyField(serializers.Field):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: str) -> str | None:
        return MASK if value else None


# --- end H-auth ------------------------------------------------------------------------------


class WebhookSerializer(serializers.ModelSerializer):
    """A webhook as read: header values masked, the secret reduced to `has_secret`."""

    conditions = ConditionSerializer(many=True, read_only=True)
    headers = HeaderSerializer(many=True, read_only=True)
    meta = MetaField(read_only=True, help_text="Sent under the payload's `meta` key")
    url = DestinationField()
    has_secret = serializers.SerializerMethodField()
    # H-auth
    auth = serializers.SerializerMethodField()
    client_key = MaskedKeyField()
    # --- H-state ---
    state = serializers.ChoiceField(
        choices=Webhook.State.choices,
        read_only=True,
        help_text="active; paused (after WEBHOOK_PAUSE_AFTER of uninterrupted failure: "
        "deliveries held until resumed); disabled (by the operator: deliveries held)",
    )
    pending_count = serializers.SerializerMethodField(
        help_text="Deliveries waiting to be sent: pending, retrying, being sent, or held",
    )
    expected_drain_at = serializers.SerializerMethodField(
        help_text="With a rate limit, when the backlog is expected to be sent if the webhook "
        "stays active and every send succeeds; null without a limit or a backlog"
    )

    class Meta:
        model = Webhook
        fields = [
            "id",
            "name",
            "url",
            "enabled",
            "scope",
            "meta",
            "conditions",
            "headers",
            *("method", "body_template", "content_type"),  # H-tmpl
            "has_secret",
            # H-auth
            "auth",
            "ca_bundle",
            "client_cert",
            "client_key",
            "hit_count",
            "last_hit_at",
            "delivered_count",
            "failed_count",
            "last_status",
            "last_delivery_at",
            "created_at",
            "updated_at",
            # H-state
            "rate_limit_per_minute",
            "state",
            "paused_reason",
            "paused_at",
            "failing_since",
            "consecutive_failures",
            "pending_count",
            "expected_drain_at",
        ]
        read_only_fields = fields

    def get_has_secret(self, webhook: Webhook) -> bool:
        return bool(webhook.secret)

    @extend_schema_field(AuthSerializer)
    def get_auth(self, webhook: Webhook) -> dict[str, str | None]:
        return auth_shown(webhook)

    def get_pending_count(self, webhook: Webhook) -> int:
        # Annotated by `lifecycle.webhooks_with_backlog` in the views; counted here otherwise.
        if not hasattr(webhook, "pending_count"):
            webhook.pending_count = webhook_backlog(webhook.pk)  # type: ignore[attr-defined]
        return webhook.pending_count  # type: ignore[attr-defined]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_expected_drain_at(self, webhook: Webhook) -> str | None:
        drain = backlog_drain_at(webhook, self.get_pending_count(webhook))
        return None if drain is None else serializers.DateTimeField().to_representation(drain)


class WebhookSavedSerializer(WebhookSerializer):
    """The answer to a create or update: the webhook, and a generated secret once."""

    secret = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The secret generated for `generate_secret: true`, shown in this response "
        "only — store it now. null otherwise.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookWriteSerializer(serializers.Serializer):
    """A webhook definition as written: conditions and headers replace the stored ones."""

    name = serializers.CharField(max_length=100)
    url = serializers.CharField(
        max_length=2000,
        help_text=f"http:// or https:// destination; its masked form (with `{MASK}`) sent back "
        "unchanged keeps the stored URL",
    )
    enabled = serializers.BooleanField(default=True)
    scope = serializers.ChoiceField(
        choices=Webhook.Scope.choices,
        required=False,
        help_text="record (default for a new webhook): once per matching CDR; call: once per "
        "matching settled call. Omitted on update: keep the stored scope",
    )
    meta = MetaField(default=dict, help_text="A JSON object sent under the payload's `meta` key")
    conditions = ConditionListField(
        default=list,
        help_text="AND-ed; an empty list matches every CDR (every call in call scope). In call "
        "scope a CDR field condition holds when at least one leg satisfies it",
    )
    headers = HeaderListField(default=list, help_text="Custom request headers")
    # H-tmpl: the request's method and body. Omitted: keep the stored value (a new webhook:
    # POST, the standard body, application/json).
    method = serializers.ChoiceField(
        choices=Webhook.Method.choices, required=False, help_text="HTTP method of every send"
    )
    body_template = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Jinja2 (sandboxed) template of the body: variables cdr, decoded, meta, name, "
        "event_id, and call, cdrs, cmrs in call scope; filter tojson. Checked on save: it "
        "must compile and, with a JSON content_type, render JSON for the sample record "
        '(call). "" sends the standard body',
    )
    content_type = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Content-Type of every send (default application/json)",
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=200,
        help_text="whsec_ + base64 of 24-64 bytes. Omitted: keep the stored secret; "
        '"" or null: remove it.',
    )
    generate_secret = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text="Generate a new secret; it is returned once, in this response. A replaced "
        "secret keeps signing beside the new one for WEBHOOK_SECRET_OVERLAP seconds",
    )
    # H-auth
    auth = AuthField(
        required=False,
        help_text="How requests authenticate; omitted: keep the stored auth (new: none)",
    )
    ca_bundle = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        max_length=200_000,
        help_text="PEM certificates trusted for this receiver besides the system's CAs; "
        'omitted: keep; "" or null: none',
    )
    client_cert = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        max_length=200_000,
        help_text="PEM client certificate for receivers that check one (mTLS), with client_key",
    )
    client_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        max_length=200_000,
        help_text=f"PEM private key of client_cert (unencrypted), write-only; `{MASK}` keeps "
        "the stored key",
    )
    # --- H-state ---
    rate_limit_per_minute = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="At most this many sends a minute, evenly spaced, across every worker; null: "
        "unlimited. Omitted on update: keep the stored limit",
    )
    drop_held = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text="With enabled: true on a disabled webhook: skip its held deliveries (reason "
        "given) instead of sending them",
    )


class ResumeResultSerializer(serializers.Serializer):
    """H-state: the answer to resuming a webhook."""

    webhook = serializers.JSONField(help_text="The webhook as GET shows it")
    released = serializers.IntegerField(help_text="Held deliveries sent again, in order")


class LicenseRequiredSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why, and how to install a license")
    code = serializers.CharField(required=False, help_text="license_required")
    license_state = serializers.ChoiceField(
        choices=[state.value for state in State], required=False
    )


class ErrorListField(serializers.ListField):
    child = serializers.CharField()


class ConditionErrorsSerializer(serializers.Serializer):
    field = ErrorListField(required=False)
    operator = ErrorListField(required=False)
    value = ErrorListField(required=False)
    non_field_errors = ErrorListField(required=False)


class HeaderErrorsSerializer(serializers.Serializer):
    name = ErrorListField(required=False)
    value = ErrorListField(required=False)
    non_field_errors = ErrorListField(required=False)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/ConditionErrors"}},
            {"type": "array", "items": {"type": "string"}},
        ],
        "description": "One entry per condition ({} when it is fine), or list-level messages",
    }
)
class ConditionErrorsField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/HeaderErrors"}},
            {"type": "array", "items": {"type": "string"}},
        ],
        "description": "One entry per header ({} when it is fine), or list-level messages",
    }
)
class HeaderErrorsField(serializers.JSONField):
    pass


class WebhookErrorsSerializer(serializers.Serializer):
    """HTTP 400 for a webhook body: each key lists the problems of that part."""

    name = ErrorListField(required=False)
    url = ErrorListField(required=False)
    enabled = ErrorListField(required=False)
    scope = ErrorListField(required=False)
    meta = ErrorListField(required=False)
    method = ErrorListField(required=False)
    body_template = ErrorListField(required=False)
    content_type = ErrorListField(required=False)
    secret = ErrorListField(required=False)
    generate_secret = ErrorListField(required=False)
    rate_limit_per_minute = ErrorListField(required=False)
    conditions = ConditionErrorsField(required=False)
    headers = HeaderErrorsField(required=False)
    auth = ErrorListField(required=False)
    ca_bundle = ErrorListField(required=False)
    client_cert = ErrorListField(required=False)
    client_key = ErrorListField(required=False)
    non_field_errors = ErrorListField(required=False)


class AttemptSerializer(serializers.ModelSerializer):
    url = DestinationField()
    error = RedactedTextField()

    class Meta:
        model = DeliveryAttempt
        fields = [
            "id",
            "delivery",
            "number",
            "trigger",
            "started_at",
            "url",
            "request_headers",
            "status_code",
            "latency_ms",
            "error_class",
            "error",
            "response_body",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "request_headers": {"help_text": "As sent, with secrets and custom values masked"},
            "response_body": {"help_text": "The first 4 KB of the response"},
        }


class DeliverySerializer(serializers.ModelSerializer):
    webhook_name = serializers.CharField(source="webhook.name", read_only=True)
    attempts = AttemptSerializer(many=True, read_only=True)
    last_error = RedactedTextField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "webhook",
            "webhook_name",
            "cdr",
            "call",
            "kind",
            "event_id",
            "status",
            "reason",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "finished_at",
            "attempts",
        ]
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    body = serializers.SerializerMethodField(
        help_text="The JSON body exactly as sent and signed. Before the first send (when "
        "`body_preview` is true) a preview rendered now from the record"
    )
    body_preview = serializers.SerializerMethodField(
        help_text="True while the delivery has not been sent: `body` is then NOT what was "
        "sent but a preview rendered from the record and the webhook's current name and "
        "meta; the body is fixed at the first send"
    )

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "body", "body_preview"]
        read_only_fields = fields

    def _preview(self, obj: Delivery) -> str | None:
        if not hasattr(obj, "_body_preview"):
            obj._body_preview = delivery_body_preview(obj)  # type: ignore[attr-defined]
        return obj._body_preview  # type: ignore[attr-defined]

    @extend_schema_field(serializers.CharField())
    def get_body(self, obj: Delivery) -> str:
        return obj.body or self._preview(obj) or ""

    @extend_schema_field(serializers.BooleanField())
    def get_body_preview(self, obj: Delivery) -> bool:
        return not obj.body and self._preview(obj) is not None


class TestSendSerializer(serializers.Serializer):
    cdr_id = serializers.PrimaryKeyRelatedField(
        queryset=Cdr.objects.select_related("layout"),
        required=False,
        allow_null=True,
        help_text="A stored CDR to send (call scope: its call); omitted: the synthetic "
        "example record (call scope: the example call)",
    )


class DryRunSerializer(serializers.Serializer):
    conditions = ConditionListField(
        required=False,
        allow_null=True,
        help_text="Conditions to try instead of the saved ones ({field, operator, value})",
    )
    since = serializers.DateTimeField(required=False, help_text="Originated at or after")
    until = serializers.DateTimeField(required=False, help_text="Originated before")
    limit = serializers.IntegerField(
        min_value=1,
        max_value=DRY_RUN_MAX_LIMIT,
        default=DRY_RUN_DEFAULT_LIMIT,
        help_text="Evaluate at most this many records (calls), newest first",
    )
    scope = serializers.ChoiceField(
        choices=Webhook.Scope.choices,
        required=False,
        help_text="Evaluate as this scope instead of the webhook's: record over stored CDRs, "
        "call over stored settled calls (since/until then bound the call's start)",
    )


class DryRunSampleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    pkid = serializers.CharField()
    cluster = serializers.CharField()
    origination_at = serializers.DateTimeField(allow_null=True)
    calling_party_number = serializers.CharField(allow_blank=True)
    original_called_party_number = serializers.CharField(allow_blank=True)
    final_called_party_number = serializers.CharField(allow_blank=True)


class CallDryRunSampleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    cluster = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    caller = serializers.CharField(allow_blank=True)
    dialed = serializers.CharField(allow_blank=True)
    answered_by = serializers.CharField(allow_blank=True)
    legs = serializers.IntegerField()
    duration = serializers.IntegerField()


class DryRunResultSerializer(serializers.Serializer):
    evaluated = serializers.IntegerField(help_text="Records (call scope: settled calls) evaluated")
    matched = serializers.IntegerField(help_text="Records (calls) the conditions match")
    sample = serializers.SerializerMethodField(
        help_text="The first 10 matches, newest first: CDRs, or calls in call scope"
    )

    @extend_schema_field(
        serializers.ListField(
            child=PolymorphicProxySerializer(
                component_name="DryRunSampleItem",
                serializers=[DryRunSampleSerializer, CallDryRunSampleSerializer],
                resource_type_field_name=None,
            )
        )
    )
    def get_sample(self, result: DryRunResult) -> list[dict[str, object]]:
        if result.scope == Webhook.Scope.CALL:
            return CallDryRunSampleSerializer(result.sample, many=True).data
        return DryRunSampleSerializer(result.sample, many=True).data


class DryRunErrorsSerializer(serializers.Serializer):
    conditions = ConditionErrorsField(required=False)
    since = ErrorListField(required=False)
    until = ErrorListField(required=False)
    limit = ErrorListField(required=False)
    scope = ErrorListField(required=False)


class BulkRedeliverSerializer(serializers.Serializer):
    webhook = serializers.PrimaryKeyRelatedField(queryset=Webhook.objects.all())
    since = serializers.DateTimeField(required=False, help_text="Created at or after")
    until = serializers.DateTimeField(required=False, help_text="Created before")
    status = serializers.ListField(
        child=serializers.ChoiceField(choices=REDELIVERABLE),
        default=[Delivery.Status.FAILED],
        allow_empty=False,
        help_text="Which deliveries to send again (default: failed)",
    )


class BulkRedeliverResultSerializer(serializers.Serializer):
    requeued = serializers.IntegerField()


class CdrFieldSerializer(serializers.Serializer):
    """One catalogue entry (a FieldSpec, or a CallFieldSpec in call scope), with how
    conditions treat it."""

    name = serializers.CharField()
    type = serializers.CharField(
        help_text="CUCM type, e.g. INTEGER or VARCHAR(50); call fields: BOOLEAN, INTEGER, "
        "DECIMAL or TEXT"
    )
    kind = serializers.SerializerMethodField(help_text="How conditions compare it")
    generation = serializers.SerializerMethodField(
        help_text="A: in every file (118 fields and up); B: from 129 fields; C: from 133; "
        "call: a call field (call-scope webhooks only)"
    )
    description = serializers.CharField(allow_blank=True)
    operators = serializers.SerializerMethodField(help_text="Operators that apply to it")

    @extend_schema_field(serializers.ChoiceField(choices=["text", "number", "time", "boolean"]))
    def get_kind(self, spec: FieldSpec | CallFieldSpec) -> str:
        if isinstance(spec, CallFieldSpec):
            return spec.comparison
        return field_kind(spec)

    @extend_schema_field(serializers.ChoiceField(choices=["A", "B", "C", "call"]))
    def get_generation(self, spec: FieldSpec | CallFieldSpec) -> str:
        return "call" if isinstance(spec, CallFieldSpec) else spec.generation

    @extend_schema_field(
        serializers.ListField(child=serializers.ChoiceField(choices=Condition.Operator.choices))
    )
    def get_operators(self, spec: FieldSpec | CallFieldSpec) -> list[str]:
        if isinstance(spec, CallFieldSpec):
            return list(spec.operators)
        return list(operators_for(spec))


# --- H-tmpl: presets and preview -------------------------------------------------------


class PresetHeaderSerializer(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.CharField(allow_blank=True)


class PresetAuthSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["none", "basic", "bearer", "oauth2"])
    fill = serializers.ListField(
        child=serializers.CharField(), help_text="The `auth` members the operator must fill"
    )


class PresetSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="e.g. teams: the admin's add form takes ?preset=teams")
    name = serializers.CharField()
    description = serializers.CharField()
    url = serializers.CharField(help_text="The destination, or its shape: replace the capitals")
    method = serializers.ChoiceField(choices=Webhook.Method.choices)
    content_type = serializers.CharField()
    body_template = serializers.CharField(allow_blank=True)
    headers = PresetHeaderSerializer(many=True)
    auth = PresetAuthSerializer()
    meta = MetaField(help_text="Members the template reads, to fill in (e.g. roomId)")


class PreviewRequestSerializer(serializers.Serializer):
    cdr_id = serializers.PrimaryKeyRelatedField(
        queryset=Cdr.objects.all(),
        required=False,
        allow_null=True,
        help_text="A stored CDR (call scope: its call)",
    )
    call_id = serializers.IntegerField(
        required=False, allow_null=True, help_text="A stored call (call-scope webhooks)"
    )


class PreviewSerializer(serializers.Serializer):
    source = serializers.ChoiceField(
        choices=["cdr", "call", "sample"],
        help_text="What was rendered: the given or latest matching stored record or call, or "
        "the sample (nothing stored matches)",
    )
    cdr_id = serializers.IntegerField(allow_null=True)
    call_id = serializers.IntegerField(allow_null=True)
    method = serializers.CharField()
    url = DestinationField()
    headers = serializers.DictField(
        child=serializers.CharField(), help_text="As they would be sent, secrets masked"
    )
    body = serializers.CharField(allow_blank=True, help_text="Exactly as it would be sent")
