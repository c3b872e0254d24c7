"""Is a cluster's CUCM writing CDRs for calls that never connected?

CUCM writes no CDR for a call that ended normally without ever connecting (an abandoned or
unanswered call) unless the Cisco CallManager service parameter "CDR Log Calls with Zero
Duration Flag" is True, and it is False by default: missed calls then never reach the
appliance, and no webhook can fire on them. A cluster that sent many CDRs and not one
never-connected call almost surely has the flag off; the admin index, `/healthz` and
`/metrics` say so (reference §1.2, §3.9).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from cdr.models import Cdr, CdrFile

PARAMETER = "CDR Log Calls with Zero Duration Flag"
# Enough CDRs that a real phone system would have had at least one unanswered call.
MIN_CDRS = 200
WINDOW = timedelta(hours=24)

# Every scrape, health check and admin index asks; the answer changes slowly.
_cache: BoundedCache[str, dict[str, bool]] = BoundedCache(max_entries=1, max_age=300)


def zero_duration_missing() -> dict[str, bool]:
    """For each cluster that sent CDR files in the last 24 h (by arrival): True when it sent
    at least MIN_CDRS CDRs in them and not one for a never-connected call (connect time empty).

    Counted from the ingest records (`created_at` is indexed), and the never-connected
    lookup reads only the records of those files (through the BRIN index on `file`) and stops
    at the first one, so the cost does not grow with the record table. The answer is kept for
    five minutes.
    """
    cached = _cache.get("clusters")
    if cached is not None:
        return cached
    files = CdrFile.objects.filter(
        kind=CdrFile.Kind.CDR, created_at__gte=timezone.now() - WINDOW
    ).exclude(cluster="")
    counts = files.values_list("cluster").annotate(n=Sum("stored_count")).order_by("cluster")
    missing = {
        cluster: (n or 0) >= MIN_CDRS
        and not Cdr.objects.filter(
            file__in=files.filter(cluster=cluster).values("id"), connect_at__isnull=True
        ).exists()
        for cluster, n in counts
    }
    _cache.set("clusters", missing)
    return missing


def zero_duration_warnings() -> list[str]:
    """One sentence per cluster that looks like it has the flag off, for the operator."""
    return [
        f"CUCM cluster {cluster} sent at least {MIN_CDRS} CDRs in the last 24 h and not one "
        f'for a call that never connected: set the service parameter "{PARAMETER}" to True '
        "(Cisco CallManager service, on every call-processing node), or unanswered calls "
        "are never recorded and missed-call webhooks never fire."
        for cluster, missing in zero_duration_missing().items()
        if missing
    ]
