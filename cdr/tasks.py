"""Celery adapters for ingest: load by id, call the service."""

from celery import shared_task

from cdr import dropfolder


@shared_task(acks_late=True, reject_on_worker_lost=True)
def ingest_file(file_id: int) -> None:
    dropfolder.queued_file_ingest(file_id=file_id)


@shared_task(ignore_result=True)
def sweep_files() -> int:
    return dropfolder.files_requeue_stale()
