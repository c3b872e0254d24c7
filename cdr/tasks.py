"""Celery adapters for ingest: load by id, call the service."""

from celery import shared_task
from django.conf import settings

from cdr import calls, dropfolder


# The soft limit interrupts an ingest that runs far beyond any real file (the lease then
# lets the sweeper retry it, up to dropfolder.MAX_ATTEMPTS); the hard one ends a process
# that ignores it.
@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.CDR_INGEST_TIME_LIMIT,
    time_limit=settings.CDR_INGEST_TIME_LIMIT + 60,
)
def ingest_file(file_id: int) -> None:
    dropfolder.queued_file_ingest(file_id=file_id)


@shared_task(ignore_result=True)
def sweep_files() -> int:
    return dropfolder.files_requeue_stale()


@shared_task(ignore_result=True)
def calls_settle() -> int:
    return len(calls.calls_settle())
