"""Celery adapters for webhooks: load by id, call the service."""

from celery import shared_task

from calltelemetry import health
from webhooks import delivery, lifecycle

# Above the worst case of one batch (its requests run at once, each bounded as a whole by
# WEBHOOK_TIMEOUT, then the database), and below the lease of its claimed deliveries, so the
# sweeper never takes one back from a task still running.
_LIMITS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": lifecycle.batch_seconds(),
    "time_limit": lifecycle.batch_seconds() + 10,
}


@shared_task(**_LIMITS)
def deliver_many(ids: list[int]) -> None:
    """Send a batch of due deliveries (at most `lifecycle.BATCH_MAX` ids per message)."""
    delivery.deliveries_attempt(ids=ids)


@shared_task(ignore_result=True)
def sweep() -> int:
    health.beat_heartbeat()
    return lifecycle.deliveries_sweep()
