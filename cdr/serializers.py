"""API bodies for ingest records, CDRs, CMRs and calls.

List rows carry the typed columns and the decoded values people read at a glance; the detail
adds every field by CUCM header name (and the CMR voice-quality metrics), which needs the
record's layout — views select it with the row so that costs no extra query.
"""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from cdr.models import Call, Cdr, CdrFile, Cmr


class RowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    reason = serializers.CharField()


class CdrFileSerializer(serializers.ModelSerializer):
    errors = RowErrorSerializer(many=True, read_only=True, help_text="Rejected rows (first 1000)")

    class Meta:
        model = CdrFile
        fields = [
            "id",
            "name",
            "sha256",
            "size",
            "kind",
            "source",
            "status",
            "cluster",
            "stored_count",
            "duplicate_count",
            "rejected_count",
            "errors",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


# An upload waits in the queue folder as `.<32 hex>__<name>.part`, and a file name has at
# most 255 bytes: 200 leaves room for that (CUCM's own names are about 40).
MAX_UPLOAD_NAME_BYTES = 200


class CdrFileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        allow_empty_file=False,
        help_text="A CUCM CDR or CMR flat file (optionally gzipped); "
        f"its name at most {MAX_UPLOAD_NAME_BYTES} bytes",
    )

    def validate_file(self, value: UploadedFile) -> UploadedFile:
        size = len((value.name or "").encode())
        if size > MAX_UPLOAD_NAME_BYTES:
            raise serializers.ValidationError(
                f"The file name is {size} bytes long; at most {MAX_UPLOAD_NAME_BYTES} are "
                "accepted. Rename the file."
            )
        return value


def _call_field() -> serializers.PrimaryKeyRelatedField:
    # `call_ref`, because `call_id` is CUCM's global call id.
    return serializers.PrimaryKeyRelatedField(
        source="call_ref",
        read_only=True,
        allow_null=True,
        help_text="The call this record belongs to (null until ingest assigns one)",
    )


class CdrSerializer(serializers.ModelSerializer):
    call = _call_field()
    orig_ip = serializers.CharField(read_only=True, allow_null=True)
    dest_ip = serializers.CharField(read_only=True, allow_null=True)
    orig_cause_text = serializers.CharField(read_only=True)
    dest_cause_text = serializers.CharField(read_only=True)
    answered = serializers.BooleanField(read_only=True)

    class Meta:
        model = Cdr
        fields = [
            "id",
            "file",
            "line",
            "cluster",
            "pkid",
            "call_manager_id",
            "call_id",
            "orig_leg_id",
            "dest_leg_id",
            "origination_at",
            "connect_at",
            "disconnect_at",
            "duration",
            "answered",
            "calling_party_number",
            "original_called_party_number",
            "final_called_party_number",
            "last_redirect_dn",
            "orig_device_name",
            "dest_device_name",
            "orig_ip",
            "dest_ip",
            "orig_cause_value",
            "orig_cause_text",
            "dest_cause_value",
            "dest_cause_text",
            "call",
            "ingested_at",
        ]
        read_only_fields = fields


class CdrDetailSerializer(CdrSerializer):
    # `get_fields` is the serializer's own hook, hence the explicit method name.
    fields = serializers.SerializerMethodField(
        method_name="all_fields", help_text="Every field as read, by header name"
    )

    class Meta(CdrSerializer.Meta):
        fields = [*CdrSerializer.Meta.fields, "fields"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def all_fields(self, obj: Cdr) -> dict[str, str]:
        return obj.fields


class CmrSerializer(serializers.ModelSerializer):
    call = _call_field()

    class Meta:
        model = Cmr
        fields = [
            "id",
            "file",
            "line",
            "cluster",
            "pkid",
            "call_manager_id",
            "call_id",
            "node_id",
            "directory_num",
            "call_identifier",
            "stamp_at",
            "device_name",
            "duration",
            "jitter",
            "latency",
            "packets_lost",
            "mos",
            "call",
            "ingested_at",
        ]
        read_only_fields = fields


class CmrDetailSerializer(CmrSerializer):
    # `get_fields` is the serializer's own hook, hence the explicit method name.
    fields = serializers.SerializerMethodField(
        method_name="all_fields", help_text="Every field as read, by header name"
    )
    vq_metrics = serializers.SerializerMethodField(help_text="varVQMetrics as key/value pairs")

    class Meta(CmrSerializer.Meta):
        fields = [*CmrSerializer.Meta.fields, "fields", "vq_metrics"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def all_fields(self, obj: Cmr) -> dict[str, str]:
        return obj.fields

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_vq_metrics(self, obj: Cmr) -> dict[str, str]:
        return obj.vq_metrics


class CallSerializer(serializers.ModelSerializer):
    """A call's facts as of its last settle, under the model's (snake_case) names, as every
    other API body; the call-scope webhook payload carries the same facts in camelCase."""

    cause_text = serializers.CharField(read_only=True)
    settled = serializers.SerializerMethodField(help_text="False while legs or CMRs may arrive")

    class Meta:
        model = Call
        fields = [
            "id",
            "cluster",
            "call_manager_id",
            "call_id",
            "started_at",
            "ended_at",
            "legs",
            "cmr_count",
            "answered",
            "missed",
            "voicemail",
            "transferred",
            "forwarded",
            "conference",
            "duration",
            "ring_seconds",
            "caller",
            "dialed",
            "answered_by",
            "cause",
            "cause_text",
            "mos_min",
            "jitter_max",
            "loss_pct",
            "settled",
            "settled_at",
            "first_arrival_at",
            "last_arrival_at",
        ]
        read_only_fields = fields

    def get_settled(self, obj: Call) -> bool:
        return obj.settled_at is not None


class CallDetailSerializer(CallSerializer):
    cdrs = serializers.SerializerMethodField(help_text="The legs, in origination order")
    cmrs = serializers.SerializerMethodField(help_text="The endpoints' CMRs, by stamp time")

    class Meta(CallSerializer.Meta):
        fields = [*CallSerializer.Meta.fields, "cdrs", "cmrs"]
        read_only_fields = fields

    @extend_schema_field(CdrSerializer(many=True))
    def get_cdrs(self, obj: Call) -> list[dict]:
        legs = obj.cdr_set.select_related("layout").order_by("origination_at", "id")
        return CdrSerializer(legs, many=True, context=self.context).data

    @extend_schema_field(CmrSerializer(many=True))
    def get_cmrs(self, obj: Call) -> list[dict]:
        cmrs = obj.cmr_set.select_related("layout").order_by("stamp_at", "id")
        return CmrSerializer(cmrs, many=True, context=self.context).data
