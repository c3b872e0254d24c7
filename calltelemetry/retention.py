"""Retention: purge CDRs, CMRs, calls and finished deliveries older than their configured age.

Rows go in batches of `BATCH_SIZE` ids, each batch its own short transaction, so ingest and
delivery writers only ever wait for one small DELETE (on SQLite a single big one would hold
the database's only write lock for the whole purge).

Deliveries are purged before records. A delivery outliving its CDR keeps its body, exactly as
sent, and its attempts; its `cdr` link becomes NULL (the foreign key is SET_NULL), so the
delivery log is governed by DELIVERY_LOG_RETENTION_DAYS alone. CdrFile rows (one per file,
with its counts and errors) are kept.

Part of the project's composition root (see `api_urls`): the purge order is a rule across
two apps, deliveries before the records they point to, so it lives where both are seen.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from cdr.models import Call, Cdr, Cmr
from webhooks.models import Delivery

log = logging.getLogger(__name__)

BATCH_SIZE = 5000

FINISHED = (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED, Delivery.Status.SKIPPED)


def _purge(queryset: models.QuerySet, batch_size: int) -> int:
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted
            queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def _older(field: str, cutoff: datetime) -> Q:
    # A record without a usable timestamp ages from when it was stored.
    return Q(**{f"{field}__lt": cutoff}) | Q(
        **{f"{field}__isnull": True, "ingested_at__lt": cutoff}
    )


def records_purge(*, days: int, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete CDRs and CMRs of calls older than `days` (0 keeps them forever)."""
    if not days:
        return 0
    cutoff = now - timedelta(days=days)
    return _purge(Cdr.objects.filter(_older("origination_at", cutoff)), batch_size) + _purge(
        Cmr.objects.filter(_older("stamp_at", cutoff)), batch_size
    )


def calls_purge(*, days: int, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete calls nothing has joined for `days` (with CDR_RETENTION_DAYS: their records
    are gone by then) and their keys; a record still pointing at one loses the link."""
    if not days:
        return 0
    cutoff = now - timedelta(days=days)
    return _purge(Call.objects.filter(last_arrival_at__lt=cutoff), batch_size)


def deliveries_purge(*, days: int, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete finished deliveries (and their attempts) older than `days` (0 keeps them)."""
    if not days:
        return 0
    cutoff = now - timedelta(days=days)
    old = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    # Pending and sending deliveries are work in progress, whatever their age.
    return _purge(Delivery.objects.filter(old, status__in=FINISHED), batch_size)


def retention_purge(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    now = now or timezone.now()
    purged = {
        "deliveries": deliveries_purge(
            days=settings.DELIVERY_LOG_RETENTION_DAYS, now=now, batch_size=batch_size
        ),
        "records": records_purge(days=settings.CDR_RETENTION_DAYS, now=now, batch_size=batch_size),
        "calls": calls_purge(days=settings.CDR_RETENTION_DAYS, now=now, batch_size=batch_size),
    }
    if any(purged.values()):
        log.info(
            "retention purged %s records, %s calls and %s deliveries",
            purged["records"],
            purged["calls"],
            purged["deliveries"],
        )
    return purged
