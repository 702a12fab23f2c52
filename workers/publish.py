"""Publishing chunk messages. Called only after the transaction that made the work durable has committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from core.jobs.admission import ChunkKey
from workers.app import celery_app, configure_broker

log = logging.getLogger(__name__)
PROCESS_CHUNK = "pfsync.process_chunk"


def publish_chunks(keys: Iterable[ChunkKey]) -> int:
    """Send one message per chunk (ids only). A failure is logged, not raised: the sweeper republishes any chunk
    whose lease runs out, so the broker being down delays work but never loses it."""
    keys = list(keys)
    if not keys:
        return 0
    if not celery_app.conf.broker_url or celery_app.conf.broker_url == "redis://":
        configure_broker()
    sent = 0
    try:
        with celery_app.producer_or_acquire() as producer:
            for job_id, chunk_no in keys:
                celery_app.send_task(
                    PROCESS_CHUNK, args=(job_id, chunk_no), producer=producer, retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
                )  # fmt: skip
                sent += 1
    except Exception as exc:
        log.warning("could not publish %d chunk(s); the sweeper will: %s", len(keys) - sent, exc)
    return sent
