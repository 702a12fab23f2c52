"""Celery tasks: thin doors into core. They take ids, reload state from PostgreSQL and publish what follows."""

from __future__ import annotations

import logging

from core.jobs.processing import process_chunk as process_chunk_in_db
from workers.app import celery_app
from workers.publish import PROCESS_CHUNK, publish_chunks

log = logging.getLogger(__name__)


@celery_app.task(name=PROCESS_CHUNK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def process_chunk(job_id: str, chunk_no: int) -> None:
    """Apply one chunk of a job, then publish the job's next chunk (or the next admitted jobs' first ones).

    Errors are logged, not retried here: the chunk's lease runs out and the sweeper publishes it again, while
    the attempt count in PostgreSQL stops a chunk that always fails.
    """
    try:
        done = process_chunk_in_db(job_id, chunk_no)
    except Exception:
        log.exception("chunk %s/%d failed; it will be retried when its lease runs out", job_id, chunk_no)
        return
    if done is not None:
        publish_chunks(done.to_publish)
        if done.finished_job is not None:
            log.info("job finished", extra={"job_id": done.finished_job})
