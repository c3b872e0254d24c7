"""Query filters for the webhook and delivery list endpoints."""

from __future__ import annotations

import django_filters as filters

from calltelemetry.filters import UtcDateTimeFilter
from webhooks.models import Delivery, Webhook


class WebhookFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains (any case)")

    class Meta:
        model = Webhook
        fields = ["name", "enabled"]


class DeliveryFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(
        choices=Delivery.Status.choices, label="Status (repeat for several)"
    )
    kind = filters.ChoiceFilter(choices=Delivery.Kind.choices)
    since = UtcDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="Created at or after (ISO-8601)"
    )
    until = UtcDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Created before (ISO-8601)"
    )

    class Meta:
        model = Delivery
        fields = ["webhook", "status", "kind", "cdr"]
