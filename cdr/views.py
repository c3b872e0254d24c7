"""REST endpoints for ingest records (and uploads), CDRs, CMRs and calls.

Views stay thin: an upload is streamed into the drop folder's queue and handed to
`file_enqueue`, exactly as the watcher does, so an uploaded file is ingested by a Celery
worker with the same durability (lease, sweeper) as a file CUCM delivered.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.serializers import BaseSerializer

from calltelemetry.schema import ApiSchema
from cdr.dropfolder import Folders, file_enqueue
from cdr.filters import CallFilter, CdrFileFilter, CdrFilter, CmrFilter
from cdr.models import Call, Cdr, CdrFile, Cmr
from cdr.serializers import (
    CallDetailSerializer,
    CallSerializer,
    CdrDetailSerializer,
    CdrFileSerializer,
    CdrFileUploadSerializer,
    CdrSerializer,
    CmrDetailSerializer,
    CmrSerializer,
)


def upload_store(upload: UploadedFile) -> Path:
    """Write the upload into the queue folder chunk by chunk (never whole in memory).

    It is written under a dot-name first and renamed, so nothing ever sees half a file.
    Django's multipart parser has already cut the name to its last path component and
    dropped `.`/`..`, so the name cannot point outside the queue.
    """
    queue = Folders.current().queue
    stem = f"{uuid.uuid4().hex}__{upload.name}"
    partial = queue / f".{stem}.part"
    with partial.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    target = queue / stem
    os.replace(partial, target)
    return target


@extend_schema_view(
    list=extend_schema(summary="List ingest records", tags=["ingest"]),
    retrieve=extend_schema(summary="Show one ingest record", tags=["ingest"]),
)
class CdrFileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every received file (watcher, SFTP, replay, upload) and the outcome of its ingest."""

    schema = ApiSchema()
    queryset = CdrFile.objects.all()
    serializer_class = CdrFileSerializer
    filterset_class = CdrFileFilter
    # Only the upload takes a body, and it is a file: never buffer JSON or form bodies here.
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Upload a CDR/CMR file for ingest",
        description="The file is queued and ingested by a worker; poll the ingest record "
        "(the `Location` header) until its status is `done`, `duplicate` or `failed`.",
        request={"multipart/form-data": CdrFileUploadSerializer},
        responses={
            202: CdrFileSerializer,
            400: OpenApiResponse(
                inline_serializer(
                    "CdrFileUploadError",
                    {"file": serializers.ListField(child=serializers.CharField())},
                ),
                description="No file, an empty one, or one whose name is too long",
            ),
        },
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                response=[202],
                description="The new ingest record, to poll",
            )
        ],
        tags=["ingest"],
    )
    def create(self, request: Request) -> Response:
        upload = CdrFileUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file: UploadedFile = upload.validated_data["file"]
        path = upload_store(file)
        try:
            cdr_file = file_enqueue(path=path, name=file.name, source="upload")
        except Exception:
            path.unlink(missing_ok=True)
            raise
        body = CdrFileSerializer(cdr_file).data
        location = reverse("cdr-file-detail", args=[cdr_file.pk], request=request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class _RecordViewSet(viewsets.ReadOnlyModelViewSet):
    schema = ApiSchema()
    detail_serializer_class: type[BaseSerializer]

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "retrieve":
            return self.detail_serializer_class
        return super().get_serializer_class()


@extend_schema_view(
    list=extend_schema(
        summary="Search CDRs",
        tags=["records"],
        parameters=[
            OpenApiParameter(
                "number",
                str,
                description="Calling, original called, final called or "
                "last redirect number (exact)",
            ),
            OpenApiParameter("device", str, description="Originating or destination device"),
            OpenApiParameter("cause", int, description="Originating or destination cause value"),
        ],
    ),
    retrieve=extend_schema(summary="Show one CDR with every field", tags=["records"]),
)
class CdrViewSet(_RecordViewSet):
    """Call detail records, newest first."""

    serializer_class = CdrSerializer
    detail_serializer_class = CdrDetailSerializer
    filterset_class = CdrFilter

    def get_queryset(self) -> QuerySet[Cdr]:
        return Cdr.objects.select_related("layout")


@extend_schema_view(
    list=extend_schema(summary="Search CMRs", tags=["records"]),
    retrieve=extend_schema(summary="Show one CMR with every field", tags=["records"]),
)
class CmrViewSet(_RecordViewSet):
    """Call management (voice-quality) records, newest first."""

    serializer_class = CmrSerializer
    detail_serializer_class = CmrDetailSerializer
    filterset_class = CmrFilter

    def get_queryset(self) -> QuerySet[Cmr]:
        return Cmr.objects.select_related("layout")


@extend_schema_view(
    list=extend_schema(summary="Search calls", tags=["calls"]),
    retrieve=extend_schema(summary="Show one call with its legs (CDRs) and CMRs", tags=["calls"]),
)
class CallViewSet(_RecordViewSet):
    """Calls (the legs and CMRs CUCM wrote for one conversation), newest first. A call merged
    into another is part of that one and never shown on its own."""

    serializer_class = CallSerializer
    detail_serializer_class = CallDetailSerializer
    filterset_class = CallFilter

    def get_queryset(self) -> QuerySet[Call]:
        return Call.objects.filter(merged_into__isnull=True)
