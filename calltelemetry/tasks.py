"""Celery adapters for appliance-wide jobs (loaded through CELERY_IMPORTS: this package is
not a Django app, so autodiscovery does not see it). Part of the composition root (see
`api_urls`)."""

from celery import shared_task

from calltelemetry import retention


@shared_task(ignore_result=True)
def retention_purge() -> dict[str, int]:
    return retention.retention_purge()
