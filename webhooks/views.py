"""REST endpoints for webhooks, their deliveries and the CDR field catalogue.

Views parse, call one service and render. Premium actions (saving a webhook, sending,
redelivering) ask the license first and answer 403 with its state; reading and deleting
never need a license, so an operator can always see and clean up what exists.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from calltelemetry.schema import (
    ERROR_DETAIL,
    FORBIDDEN,
    NOT_FOUND,
    READ_ERRORS,
    UNAUTHENTICATED,
    ApiSchema,
)
from cdr.fields import CDR_FIELDS
from cdr.models import Call
from licensing.gating import require_webhooks_license
from webhooks.call_matching import CALL_FIELDS
from webhooks.filters import DeliveryFilter, WebhookFilter
from webhooks.lifecycle import webhooks_with_backlog
from webhooks.models import Delivery, Webhook
from webhooks.operations import calls_dry_run, cdrs_dry_run, deliveries_redeliver
from webhooks.presets import PRESETS
from webhooks.redaction import MaskedUrl, url_restored
from webhooks.serializers import (
    AttemptSerializer,
    BulkRedeliverResultSerializer,
    BulkRedeliverSerializer,
    CdrFieldSerializer,
    DeliveryDetailSerializer,
    DeliverySerializer,
    DryRunErrorsSerializer,
    DryRunResultSerializer,
    DryRunSerializer,
    LicenseRequiredSerializer,
    PresetSerializer,
    PreviewRequestSerializer,
    PreviewSerializer,
    ResumeResultSerializer,
    TestSendSerializer,
    WebhookErrorsSerializer,
    WebhookSavedSerializer,
    WebhookSerializer,
    WebhookWriteSerializer,
)
from webhooks.services import (
    delivery_redeliver,
    webhook_preview,
    webhook_resume,
    webhook_test_send,
)
from webhooks.templating import TemplateFailed
from webhooks.trigger import webhook_rules
from webhooks.validation import UNCHANGED, WebhookInvalid, condition_rules, webhook_save

FORBIDDEN_OR_UNLICENSED = OpenApiResponse(
    LicenseRequiredSerializer,
    description="Not staff (`detail` only), or webhooks are not licensed: "
    "`code` is `license_required` and `license_state` tells why",
    examples=[
        OpenApiExample(
            "Not licensed",
            {
                "detail": "Webhooks need a premium license (license state: community). …",
                "code": "license_required",
                "license_state": "community",
            },
        )
    ],
)
WRITE_ERRORS = {401: UNAUTHENTICATED, 403: FORBIDDEN_OR_UNLICENSED}
WEBHOOK_400 = OpenApiResponse(
    WebhookErrorsSerializer,
    description="Every problem at once; nested lists point at the exact condition or header",
    examples=[
        OpenApiExample(
            "A bad second condition",
            {"conditions": [{}, {"value": ["'abc' is not a whole number"]}]},
        )
    ],
)


class NotSent(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The test event was not sent."
    default_code = "not_sent"


@extend_schema_view(
    list=extend_schema(summary="List webhooks", responses={200: WebhookSerializer, **READ_ERRORS}),
    retrieve=extend_schema(
        summary="Show a webhook", responses={200: WebhookSerializer, 404: NOT_FOUND, **READ_ERRORS}
    ),
    partial_update=extend_schema(
        summary="Change some of a webhook",
        description="Only the keys given change; `conditions` or `headers`, when given, "
        "replace the stored list.",
        request=WebhookWriteSerializer,
        responses={200: WebhookSavedSerializer, 400: WEBHOOK_400, 404: NOT_FOUND, **WRITE_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a webhook (and its delivery log)",
        responses={204: None, 401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND},
    ),
)
class WebhookViewSet(viewsets.ModelViewSet):
    """Webhooks: conditions on CDR fields, a destination, and delivery statistics."""

    schema = ApiSchema()

    filterset_class = WebhookFilter
    # Nested conditions and headers only make sense as JSON.
    parser_classes = [JSONParser]

    def get_queryset(self) -> QuerySet[Any]:
        if self.action == "deliveries":
            return _deliveries()
        return webhooks_with_backlog(Webhook.objects.prefetch_related("conditions", "headers"))

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return DeliverySerializer if self.action == "deliveries" else WebhookSerializer

    def _save(self, data: dict[str, Any], webhook: Webhook | None) -> tuple[Webhook, str | None]:
        try:
            saved, secret = webhook_save(webhook=webhook, **data)
        except WebhookInvalid as exc:
            raise ValidationError(exc.errors) from exc
        # Read back: conditions and headers were replaced under any prefetched copy.
        return self.get_queryset().get(pk=saved.pk), secret

    @staticmethod
    def _url(given: dict[str, Any], webhook: Webhook | None) -> str:
        """The URL to save: one sent back masked and unchanged keeps the stored URL."""
        stored = webhook.url if webhook is not None else None
        try:
            return url_restored(given.get("url", stored), stored=stored)
        except MaskedUrl as exc:
            raise ValidationError({"url": [str(exc)]}) from exc

    def _saved(self, webhook: Webhook, secret: str | None, code: int) -> Response:
        body = WebhookSavedSerializer(webhook, context=self.get_serializer_context()).data
        body["secret"] = secret
        return Response(body, status=code)

    @extend_schema(
        summary="Create a webhook with its conditions and headers",
        request=WebhookWriteSerializer,
        responses={201: WebhookSavedSerializer, 400: WEBHOOK_400, **WRITE_ERRORS},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_webhooks_license()
        body = WebhookWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = {**body.validated_data}
        data.pop("drop_held")  # a new webhook holds nothing
        data["url"] = self._url(data, None)
        data.setdefault("secret", None)
        data["tls"] = _tls_given(data)
        webhook, secret = self._save(data, None)
        return self._saved(webhook, secret, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Replace a webhook, its conditions and its headers",
        description="Omitting `secret` keeps the stored one. A header sent back with the "
        "masked value keeps its stored value.",
        request=WebhookWriteSerializer,
        responses={200: WebhookSavedSerializer, 400: WEBHOOK_400, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_webhooks_license()
        webhook = self.get_object()
        partial = kwargs.get("partial", False)
        body = WebhookWriteSerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        data = {
            "name": given.get("name", webhook.name),
            "url": self._url(given, webhook),
            "enabled": given.get("enabled", webhook.enabled),
            "scope": given.get("scope"),
            "meta": given.get("meta", webhook.meta),
            "conditions": given.get("conditions"),
            "headers": given.get("headers"),
            "secret": given.get("secret"),
            "generate_secret": given.get("generate_secret", False),
            **{key: given.get(key) for key in ("method", "body_template", "content_type")},
            "auth": given.get("auth"),
            "tls": _tls_given(given),
            # H-state
            "rate_limit_per_minute": given.get("rate_limit_per_minute", UNCHANGED),
            "drop_held": given.get("drop_held", False),
        }
        webhook, secret = self._save(data, webhook)
        return self._saved(webhook, secret, status.HTTP_200_OK)

    @extend_schema(
        summary="Resume a paused webhook",
        description="Ends the pause (its run of failures starts afresh) and, unless the "
        "webhook is disabled, sends its held deliveries in order, within its rate limit. "
        "Resuming a webhook that is not paused changes nothing.",
        request=None,
        responses={200: ResumeResultSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        require_webhooks_license()
        webhook = self.get_object()
        released = webhook_resume(webhook=webhook)
        shown = WebhookSerializer(
            self.get_queryset().get(pk=webhook.pk), context=self.get_serializer_context()
        ).data
        return Response({"webhook": shown, "released": released})

    @extend_schema(
        summary="Send a test event now",
        description="One attempt, no retries, with the header `webhook-test: true`: a stored "
        "CDR (`cdr_id`), else the newest stored CDR the conditions match, else the "
        "synthetic example record; for a call-scope webhook the call payload of that CDR's "
        "call, else of the newest matching settled call, else of the example call. Answers "
        "with the attempt, whatever the receiver said.",
        request=TestSendSerializer,
        responses={
            200: AttemptSerializer,
            400: OpenApiResponse(
                inline_serializer(
                    "TestSendErrors",
                    {
                        name: serializers.ListField(child=serializers.CharField(), required=False)
                        for name in ("cdr_id", "body_template")
                    },
                ),
                description="No CDR with that id, or the body template failed (not sent)",
            ),
            404: NOT_FOUND,
            409: OpenApiResponse(ERROR_DETAIL, description="Not sent (license lapsed meanwhile)"),
            **WRITE_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        require_webhooks_license()
        webhook = self.get_object()
        body = TestSendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            attempt = webhook_test_send(webhook=webhook, cdr=body.validated_data.get("cdr_id"))
        except TemplateFailed as exc:
            raise ValidationError({"body_template": [str(exc)]}) from exc
        if attempt is None:
            raise NotSent()
        return Response(AttemptSerializer(attempt, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Render the request for a stored record or call, without sending it",
        description="The body and headers (secrets masked) the webhook would send for a "
        "stored CDR (`cdr_id`; call scope: its call) or call (`call_id`, call scope), or, "
        "with neither, for the newest stored one its conditions match, else the sample. "
        "Nothing is sent or stored; no license needed.",
        request=PreviewRequestSerializer,
        responses={
            200: PreviewSerializer,
            400: OpenApiResponse(
                inline_serializer(
                    "PreviewErrors",
                    {
                        name: serializers.ListField(child=serializers.CharField(), required=False)
                        for name in ("cdr_id", "call_id", "body_template")
                    },
                ),
                description="No such CDR or call, or the body template failed on it",
            ),
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        webhook = self.get_object()
        body = PreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        cdr, call_id = body.validated_data.get("cdr_id"), body.validated_data.get("call_id")
        if call_id is not None:
            if webhook.scope != Webhook.Scope.CALL:
                raise ValidationError({"call_id": ["a record-scope webhook renders CDRs"]})
            if not Call.objects.filter(pk=call_id).exists():
                raise ValidationError({"call_id": [f"no call with id {call_id}"]})
        try:
            preview = webhook_preview(webhook=webhook, cdr=cdr, call_id=call_id)
        except TemplateFailed as exc:
            raise ValidationError({"body_template": [str(exc)]}) from exc
        data = {
            "source": preview.source.kind,
            "cdr_id": preview.source.cdr_id,
            "call_id": preview.source.call_id,
            "method": preview.method,
            "url": preview.url,
            "headers": preview.headers,
            "body": preview.body,
        }
        return Response(PreviewSerializer(data, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Count which stored CDRs (or calls) the conditions match",
        description="Evaluates the saved conditions, or `conditions` from the body, with the "
        "live matcher over stored CDRs (newest first, in the time range, at most `limit`); "
        "for a call-scope webhook (or `scope: call`) over stored settled calls, as they "
        "fire when they settle. Nothing is stored or sent; no license needed.",
        request=DryRunSerializer,
        responses={
            200: DryRunResultSerializer,
            400: OpenApiResponse(DryRunErrorsSerializer, description="Invalid conditions"),
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, pk: str | None = None) -> Response:
        webhook = self.get_object()
        body = DryRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        scope = given.get("scope", webhook.scope)
        conditions = given.get("conditions")
        if conditions is None and scope == webhook.scope:
            try:
                rules = webhook_rules(webhook)
            except ValueError as exc:  # saved before a validation rule existed
                raise ValidationError({"conditions": [str(exc)]}) from exc
        else:
            if conditions is None:  # the saved ones, tried in the other scope
                conditions = list(webhook.conditions.values("field", "operator", "value"))
            rules, errors = condition_rules(conditions, scope)
            if any(errors):
                raise ValidationError({"conditions": errors})
        since, until, limit = given.get("since"), given.get("until"), given["limit"]
        run = calls_dry_run if scope == Webhook.Scope.CALL else cdrs_dry_run
        result = run(rules=rules, since=since, until=until, limit=limit)
        return Response(DryRunResultSerializer(result).data)

    @extend_schema(
        summary="List the deliveries of a webhook",
        responses={200: DeliverySerializer(many=True), 404: NOT_FOUND, **READ_ERRORS},
    )
    @action(detail=True, methods=["get"], filterset_class=DeliveryFilter)
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        # Not get_object(): this action's filters apply to deliveries, not to webhooks.
        try:
            webhook = Webhook.objects.get(pk=int(pk))
        except (TypeError, ValueError, Webhook.DoesNotExist) as exc:  # not an id: no such webhook
            raise Http404 from exc
        queryset = self.filter_queryset(self.get_queryset().filter(webhook=webhook))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


def _tls_given(data: dict[str, Any]) -> dict[str, Any]:
    """H-auth: the TLS members of a body (popped from `data`); missing ones keep theirs."""
    return {key: data.pop(key) for key in ("ca_bundle", "client_cert", "client_key") if key in data}


def _deliveries() -> QuerySet[Delivery]:
    return Delivery.objects.select_related("webhook").prefetch_related("attempts")


@extend_schema_view(
    list=extend_schema(
        summary="List deliveries with their attempts",
        responses={200: DeliverySerializer, **READ_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Show a delivery with its payload and attempts",
        responses={200: DeliveryDetailSerializer, 404: NOT_FOUND, **READ_ERRORS},
    ),
)
class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The delivery log: one row per matched record and webhook (and per test send)."""

    schema = ApiSchema()

    filterset_class = DeliveryFilter
    parser_classes = [JSONParser]

    def get_queryset(self) -> QuerySet[Delivery]:
        return _deliveries()

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliverySerializer

    @extend_schema(
        summary="Send a delivery again",
        description="Same webhook-id, a fresh retry schedule. One being sent right now is "
        "left alone.",
        request=None,
        responses={202: DeliveryDetailSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str | None = None) -> Response:
        require_webhooks_license()
        delivery = delivery_redeliver(delivery=self.get_object())
        return Response(DeliveryDetailSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="deliveries_redeliver_bulk",
        summary="Send again every delivery of a webhook in a time range",
        description='For example after a receiver outage: `{"webhook": 3, "since": …, '
        '"status": ["failed"]}`.',
        request=BulkRedeliverSerializer,
        responses={
            202: BulkRedeliverResultSerializer,
            400: OpenApiResponse(
                inline_serializer(
                    "BulkRedeliverErrors",
                    {
                        name: serializers.ListField(child=serializers.CharField(), required=False)
                        for name in ("webhook", "since", "until", "status")
                    },
                ),
                description="Invalid body",
            ),
            **WRITE_ERRORS,
        },
    )
    @action(detail=False, methods=["post"], url_path="redeliver", filterset_class=None)
    def redeliver_many(self, request: Request) -> Response:
        require_webhooks_license()
        body = BulkRedeliverSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        count = deliveries_redeliver(
            webhook=given["webhook"],
            since=given.get("since"),
            until=given.get("until"),
            statuses=given["status"],
        )
        return Response({"requeued": count}, status=status.HTTP_202_ACCEPTED)


class CataloguePagination(PageNumberPagination):
    # The whole catalogue in one page: condition editors want every field at once.
    page_size = 200


@extend_schema_view(
    list=extend_schema(
        summary="The CDR field catalogue, with the operators each field takes",
        parameters=[
            OpenApiParameter(
                "scope",
                str,
                enum=Webhook.Scope.values,
                description="call: the call.* fields first (call-scope webhooks), then every "
                "CDR field; record (default): the CDR fields",
            )
        ],
        responses={
            200: CdrFieldSerializer,
            400: OpenApiResponse(
                inline_serializer(
                    "CdrFieldErrors",
                    {"scope": serializers.ListField(child=serializers.CharField())},
                ),
                description="Unknown scope",
            ),
            **READ_ERRORS,
        },
    )
)
class CdrFieldViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every CDR field of the newest CUCM generation, in file order; with `?scope=call`,
    the call fields first."""

    schema = ApiSchema()

    serializer_class = CdrFieldSerializer
    pagination_class = CataloguePagination
    filter_backends: list[type] = []

    def get_queryset(self) -> list[Any]:  # type: ignore[override]
        scope = self.request.query_params.get("scope", Webhook.Scope.RECORD)
        if scope not in Webhook.Scope.values:
            raise ValidationError({"scope": [f"one of {', '.join(Webhook.Scope.values)}"]})
        if scope == Webhook.Scope.CALL:
            return [*CALL_FIELDS, *CDR_FIELDS]
        return list(CDR_FIELDS)


@extend_schema_view(
    list=extend_schema(
        summary="List webhook presets (Webex, Teams, Slack, ServiceNow, generic JSON)",
        responses={200: PresetSerializer(many=True), **READ_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Show a webhook preset",
        responses={200: PresetSerializer, 404: NOT_FOUND, **READ_ERRORS},
    ),
)
class WebhookPresetViewSet(viewsets.ViewSet):
    """H-tmpl: starting points that fill method, body template, content type, headers and
    the auth type of a new webhook; the operator then edits them."""

    schema = ApiSchema()
    lookup_value_regex = "[a-z]+"

    def list(self, request: Request) -> Response:
        return Response(PresetSerializer([p.as_dict() for p in PRESETS.values()], many=True).data)

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        preset = PRESETS.get(pk or "")
        if preset is None:
            raise Http404
        return Response(PresetSerializer(preset.as_dict()).data)
