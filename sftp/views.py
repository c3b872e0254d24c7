"""REST endpoints for CDR sources (SFTP logins). Reads for any user, writes for staff."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.serializers import BaseSerializer

from calltelemetry.schema import ApiSchema
from sftp.models import CdrSource
from sftp.serializers import CdrSourceSerializer
from sftp.services import cdr_source_create, cdr_source_update


@extend_schema_view(
    list=extend_schema(summary="List CDR sources", tags=["sftp"]),
    retrieve=extend_schema(summary="Show one CDR source", tags=["sftp"]),
    create=extend_schema(summary="Create a CDR source (an SFTP login)", tags=["sftp"]),
    update=extend_schema(summary="Replace a CDR source", tags=["sftp"]),
    partial_update=extend_schema(summary="Change a CDR source", tags=["sftp"]),
    destroy=extend_schema(summary="Delete a CDR source", tags=["sftp"]),
)
class CdrSourceViewSet(viewsets.ModelViewSet):
    """The logins CUCM clusters use to deliver CDR/CMR files over SFTP, with their counters."""

    schema = ApiSchema()
    queryset = CdrSource.objects.all()
    serializer_class = CdrSourceSerializer

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = cdr_source_create(**serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer) -> None:
        serializer.instance = cdr_source_update(
            source=serializer.instance, **serializer.validated_data
        )
