"""API body of a CDR source: the password is accepted, validated and never returned."""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from sftp.models import CdrSource


class CdrSourceSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Required on create; send it again only to change it. Never returned.",
    )

    class Meta:
        model = CdrSource
        fields = [
            "id",
            "name",
            "username",
            "password",
            "cluster_id",
            "enabled",
            "last_upload_at",
            "files_received",
            "bytes_received",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "last_upload_at",
            "files_received",
            "bytes_received",
            "created_at",
        ]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        if self.instance is not None:
            fields["password"].required = False
        return fields

    def validate_password(self, value: str) -> str:
        try:
            password_validation.validate_password(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from exc
        return value
