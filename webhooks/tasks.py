"""Celery adapters for webhooks: load by id, call the service."""

from celery import shared_task
from django.conf import settings

from calltelemetry import health
from webhooks import delivery, services


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.WEBHOOK_TIMEOUT * 2 + 10,
    time_limit=settings.WEBHOOK_TIMEOUT * 2 + 20,
)
def deliver(delivery_id: int) -> None:
    delivery.delivery_attempt(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def sweep() -> int:
    health.beat_heartbeat()
    return services.deliveries_sweep()
