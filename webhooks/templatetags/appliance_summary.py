"""The admin index's "at a glance" panel: ingest today, lag per cluster, delivery health.

It lives in webhooks, the app that knows both the ingest records and the deliveries: cdr
must not import webhooks (STYLE.md, "Dependency direction").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from cdr.models import CdrFile
from webhooks.models import Delivery, Webhook

register = template.Library()


@register.inclusion_tag("admin/appliance_summary.html")
def appliance_summary() -> dict[str, Any]:
    now = timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Summed from the ingest records: a COUNT over the record tables would scan millions.
    today = CdrFile.objects.filter(finished_at__gte=midnight).aggregate(
        records=Sum("stored_count"), files=Count("id")
    )
    clusters = [
        {"cluster": row["cluster"] or "—", "last": row["last"], "lag": now - row["last"]}
        for row in CdrFile.objects.exclude(finished_at=None)
        .values("cluster")
        .annotate(last=Max("finished_at"))
        .order_by("cluster")
    ]
    waiting = [Delivery.Status.PENDING, Delivery.Status.RETRYING, Delivery.Status.SENDING]
    deliveries = Delivery.objects.filter(created_at__gte=now - timedelta(hours=24)).aggregate(
        pending=Count("id", filter=Q(status__in=waiting)),
        failed=Count("id", filter=Q(status=Delivery.Status.FAILED)),
        succeeded=Count("id", filter=Q(status=Delivery.Status.SUCCEEDED)),
    )
    return {
        "records_today": today["records"] or 0,
        "files_today": today["files"],
        "clusters": clusters,
        "deliveries": deliveries,
    }


@register.inclusion_tag("admin/paused_webhooks.html")
def paused_webhooks() -> dict[str, Any]:
    """H-state: every paused webhook, why, and how many deliveries it holds."""
    paused = Webhook.objects.filter(paused_at__isnull=False).annotate(
        held=Count("deliveries", filter=Q(deliveries__status=Delivery.Status.HELD))
    )
    return {"paused": list(paused.order_by("name"))}
