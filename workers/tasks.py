"""Celery tasks: thin doors into core. They take ids, reload state from PostgreSQL and publish what follows."""

from __future__ import annotations

import logging

from core import logs
from core.db import after_commit, session_scope
from core.jobs.processing import NotItsTurn, count_attempt, give_back
from core.jobs.processing import process_chunk as apply_chunk
from workers.app import celery_app
from workers.publish import PROCESS_CHUNK, publish_chunks

log = logging.getLogger(__name__)


@celery_app.task(name=PROCESS_CHUNK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def process_chunk(job_id: str, chunk_no: int) -> None:
    """Apply one chunk of a job, then publish the job's next chunk (or the next admitted jobs' first ones).

    The task owns the transactions: the attempt is counted and committed first, on its own, then the chunk is
    applied in one transaction that holds the chunk's lock; what follows is published once that commits. Errors
    are logged, not retried here: the chunk's lease runs out and the sweeper publishes it again, while the
    attempt count in PostgreSQL stops a chunk that always fails.
    """

    def claim() -> int | None:
        with session_scope() as session:
            return count_attempt(session, job_id=job_id, chunk_no=chunk_no)

    try:
        with logs.bound(job_id=job_id), session_scope() as session:
            done = apply_chunk(session, job_id=job_id, chunk_no=chunk_no, claim=claim)
            if done is not None:
                after_commit(session, lambda: publish_chunks(done.to_publish))
    except NotItsTurn as reason:
        # A dry-run chunk whose predecessor nobody processes yet: its predecessor publishes it again once done.
        log.info("chunk %s/%d waits for the one before it: %s", job_id, chunk_no, reason)
        with session_scope() as session:
            give_back(session, job_id=job_id, chunk_no=chunk_no)
        return
    except Exception:
        log.exception("chunk %s/%d failed; it will be retried when its lease runs out", job_id, chunk_no)
        return
    if done is not None and done.finished_job is not None:
        log.info("job finished", extra={"job_id": done.finished_job})
