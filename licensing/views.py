from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calltelemetry.schema import ApiSchema
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

    schema = ApiSchema()

    @extend_schema(responses={200: LicenseSerializer}, summary="Show the license in force")
    def get(self, request: Request) -> Response:
        return Response(LicenseSerializer(license_get()).data)

    @extend_schema(
        request=LicenseInstallSerializer,
        responses={
            200: LicenseSerializer,
            400: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="LicenseInstallError",
                    serializers=[
                        LicenseRejectedSerializer,
                        inline_serializer(
                            "LicenseInstallErrors",
                            {"license": serializers.ListField(child=serializers.CharField())},
                        ),
                    ],
                    resource_type_field_name=None,
                ),
                description="The license was refused (`detail` and `code`), or the body "
                "has no usable `license` (a list of messages under `license`)",
            ),
        },
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
