"""Shared API schema helpers: every app's views document their answers with these.

They live in the project shell, not in one app's views, so that no app imports another's
views (see STYLE.md, "Dependency direction").
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ERROR_DETAIL = inline_serializer("ErrorDetail", {"detail": serializers.CharField()})
UNAUTHENTICATED = OpenApiResponse(ERROR_DETAIL, description="No or invalid credentials")
NOT_FOUND = OpenApiResponse(ERROR_DETAIL, description="No such object")
FORBIDDEN = OpenApiResponse(ERROR_DETAIL, description="Staff only")
READ_ERRORS = {401: UNAUTHENTICATED}
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Invalid input: a list of messages per offending field"
)

UNSUPPORTED_MEDIA_TYPE = OpenApiResponse(ERROR_DETAIL, description="A body of another content type")


class ApiSchema(AutoSchema):
    """AutoSchema that also documents the errors every endpoint of this API can answer with,
    unless the view documents them itself: 401 without credentials, 403 on writes by
    non-staff (ReadAuthenticatedWriteStaff), 404 for an unknown id or a page past the end,
    400 for an invalid body or an invalid filter value, and 415 for a body of
    another content type."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        errors: dict[str, OpenApiResponse] = {"401": UNAUTHENTICATED}
        if self.method not in ("GET", "HEAD", "OPTIONS"):
            errors["403"] = FORBIDDEN
        is_list = self.method == "GET" and self._is_list_view()
        if "{" in self.path or (is_list and self._get_paginator() is not None):
            errors["404"] = NOT_FOUND
        if (is_list and self._get_filter_parameters()) or (
            self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        ):
            errors["400"] = FIELD_ERRORS
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors["415"] = UNSUPPORTED_MEDIA_TYPE
        for code, response in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses
