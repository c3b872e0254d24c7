from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing.selectors import license_get
from licensing.serializers import (
    LicenseInstallSerializer,
    LicenseRejectedSerializer,
    LicenseSerializer,
)
from licensing.services import license_install
from licensing.verification import LicenseError


class LicenseRejected(APIException):
    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, error: LicenseError) -> None:
        super().__init__(detail={"detail": error.reason, "code": str(error.code)})


class LicenseView(APIView):
    """The appliance's premium license: anyone signed in may read it, staff install it."""

    @extend_schema(responses={200: LicenseSerializer}, summary="Show the license in force")
    def get(self, request: Request) -> Response:
        return Response(LicenseSerializer(license_get()).data)

    @extend_schema(
        request=LicenseInstallSerializer,
        responses={200: LicenseSerializer, 400: LicenseRejectedSerializer},
        summary="Install a license",
        description="Verifies the license offline; a refused one leaves the installed "
        "license untouched.",
    )
    def put(self, request: Request) -> Response:
        serializer = LicenseInstallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            info = license_install(text=serializer.validated_data["license"])
        except LicenseError as exc:
            raise LicenseRejected(exc) from exc
        return Response(LicenseSerializer(info).data)
