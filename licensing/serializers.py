from __future__ import annotations

from rest_framework import serializers

from licensing.verification import MAX_LICENSE_CHARS, State


class LicenseSerializer(serializers.Serializer):
    """The license in force, as the API shows it: details only, never the signed text."""

    state = serializers.ChoiceField(choices=[s.value for s in State])
    reason = serializers.CharField(help_text="Why the license is in this state, for people.")
    error_code = serializers.CharField(
        allow_null=True, help_text="Why the installed license was refused, when it was."
    )
    customer = serializers.CharField(allow_null=True)
    license_id = serializers.CharField(allow_null=True)
    features = serializers.ListField(child=serializers.CharField())
    limits = serializers.DictField(child=serializers.IntegerField())
    issued_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True, help_text="null: perpetual.")
    grace_days = serializers.IntegerField(allow_null=True)
    grace_ends_at = serializers.DateTimeField(allow_null=True)
    days_left = serializers.IntegerField(allow_null=True)
    appliance_id = serializers.CharField()
    evaluated_at = serializers.DateTimeField(
        help_text="The time the state was judged at (never earlier than a time already seen)."
    )
    clock_suspect = serializers.BooleanField(
        help_text="The system clock is far behind the latest time seen."
    )


class LicenseInstallSerializer(serializers.Serializer):
    license = serializers.CharField(
        max_length=MAX_LICENSE_CHARS, help_text="The license line, CTLIC1.<payload>.<signature>."
    )


class LicenseRejectedSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the license was refused.")
    code = serializers.CharField(
        help_text="malformed, unsupported_version, unknown_key, bad_signature, "
        "invalid_payload, not_yet_valid, wrong_appliance or expired."
    )
