"""Query filters for the ingest-record, CDR, CMR and call list endpoints."""

from __future__ import annotations

import django_filters as filters
from django.db.models import Q, QuerySet

from calltelemetry.filters import UtcDateTimeFilter
from cdr.models import Call, Cdr, CdrFile, Cmr

NUMBER_FIELDS = (
    "calling_party_number",
    "original_called_party_number",
    "final_called_party_number",
    "last_redirect_dn",
)
# The numbers of a leg that a call's `number` filter looks at.
LEG_NUMBER_FIELDS = (
    "calling_party_number",
    "original_called_party_number",
    "final_called_party_number",
)


class CdrFileFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=CdrFile.Status.choices)
    kind = filters.ChoiceFilter(choices=CdrFile.Kind.choices)
    created_after = UtcDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="Received at or after (ISO-8601)"
    )
    created_before = UtcDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Received before (ISO-8601)"
    )

    class Meta:
        model = CdrFile
        fields = ["status", "kind", "cluster", "source"]


class CdrFilter(filters.FilterSet):
    since = UtcDateTimeFilter(
        field_name="origination_at", lookup_expr="gte", label="Originated at or after (ISO-8601)"
    )
    until = UtcDateTimeFilter(
        field_name="origination_at", lookup_expr="lt", label="Originated before (ISO-8601)"
    )
    number = filters.CharFilter(
        method="filter_number", label="Calling, original called, final called or redirect number"
    )
    device = filters.CharFilter(method="filter_device", label="Originating or destination device")
    cause = filters.NumberFilter(method="filter_cause", label="Originating or destination cause")
    answered = filters.BooleanFilter(
        field_name="connect_at", lookup_expr="isnull", exclude=True, label="Connected at all"
    )
    min_duration = filters.NumberFilter(field_name="duration", lookup_expr="gte")
    max_duration = filters.NumberFilter(field_name="duration", lookup_expr="lte")

    class Meta:
        model = Cdr
        fields = ["cluster", *NUMBER_FIELDS, "call_id", "call_manager_id", "pkid", "file"]

    def filter_number(self, queryset: QuerySet[Cdr], name: str, value: str) -> QuerySet[Cdr]:
        match = Q()
        for field in NUMBER_FIELDS:
            match |= Q(**{field: value})
        return queryset.filter(match)

    def filter_device(self, queryset: QuerySet[Cdr], name: str, value: str) -> QuerySet[Cdr]:
        return queryset.filter(Q(orig_device_name=value) | Q(dest_device_name=value))

    def filter_cause(self, queryset: QuerySet[Cdr], name: str, value: object) -> QuerySet[Cdr]:
        return queryset.filter(Q(orig_cause_value=value) | Q(dest_cause_value=value))


class CmrFilter(filters.FilterSet):
    since = UtcDateTimeFilter(
        field_name="stamp_at", lookup_expr="gte", label="Stamped at or after (ISO-8601)"
    )
    until = UtcDateTimeFilter(
        field_name="stamp_at", lookup_expr="lt", label="Stamped before (ISO-8601)"
    )
    min_duration = filters.NumberFilter(field_name="duration", lookup_expr="gte")
    max_duration = filters.NumberFilter(field_name="duration", lookup_expr="lte")

    class Meta:
        model = Cmr
        fields = [
            "cluster",
            "directory_num",
            "device_name",
            "call_identifier",
            "call_id",
            "call_manager_id",
            "pkid",
            "file",
        ]


def call_number_q(number: str) -> Q:
    """Calls whose caller, dialed or answered-by number is `number`, or one of whose legs has
    it as calling, original called or final called number (the API filter and admin search).
    """
    # The legs are found once through their number indexes (PostgreSQL hashes the
    # subquery's call ids), not looked up call by call.
    leg = Q()
    for field in LEG_NUMBER_FIELDS:
        leg |= Q(**{field: number})
    legs = Cdr.objects.filter(leg, call_ref__isnull=False).values("call_ref")
    # caller, dialed and answered-by are numbers of the call's legs: the legs say it all.
    return Q(pk__in=legs)


class CallFilter(filters.FilterSet):
    # The same names as the CDR list's time range, on the call's first origination.
    since = UtcDateTimeFilter(
        field_name="started_at", lookup_expr="gte", label="Started at or after (ISO-8601)"
    )
    until = UtcDateTimeFilter(
        field_name="started_at", lookup_expr="lt", label="Started before (ISO-8601)"
    )
    number = filters.CharFilter(
        method="filter_number",
        label="Caller, dialed, answered-by, or any leg's calling, original called or final "
        "called number (exact)",
    )
    mos_below = filters.NumberFilter(
        field_name="mos_min", lookup_expr="lt", label="Lowest MOS of any endpoint below this"
    )
    settled = filters.BooleanFilter(
        field_name="settled_at", lookup_expr="isnull", exclude=True, label="Settled (not open)"
    )

    class Meta:
        model = Call
        fields = ["cluster", "answered", "missed", "voicemail"]

    def filter_number(self, queryset: QuerySet[Call], name: str, value: str) -> QuerySet[Call]:
        return queryset.filter(call_number_q(value))
