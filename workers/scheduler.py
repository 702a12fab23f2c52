"""The scheduler process: republishes work whose lease ran out, purges expired jobs and idempotency keys, and
sends completion webhooks (in a thread of its own, so a slow receiver never delays the sweep).

It talks to PostgreSQL directly and publishes to the broker, so it keeps working when the broker lost its data.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from core import logs
from core.config import settings
from core.db import session_scope
from core.jobs.service import purge_expired_jobs, sweep
from core.partners.idempotency import purge_expired
from workers.app import configure_broker
from workers.publish import publish_chunks
from workers.webhooks import run_dispatcher

log = logging.getLogger(__name__)
PURGE_EVERY_SECONDS = 3600.0


def sweep_once() -> int:
    """One sweep: lease again and republish lapsed chunks. Returns how many were republished."""
    with session_scope() as session:
        keys = sweep(session)
    if keys:
        log.info("republishing %d chunk(s) whose lease ran out", len(keys))
    return publish_chunks(keys)


def purge_once() -> None:
    with session_scope() as session:
        jobs = purge_expired_jobs(session)
        keys = purge_expired(session)
    if jobs or keys:
        log.info("purged %d expired job(s) and %d idempotency key(s)", jobs, keys)


def main() -> None:
    """Run until SIGINT or SIGTERM."""
    logs.configure(settings.log_level, settings.log_json)
    configure_broker()
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("scheduler started", extra={"sweep_interval_seconds": settings.sweep_interval_seconds})
    webhooks = threading.Thread(target=run_dispatcher, args=(stop,), name="webhooks", daemon=True)
    webhooks.start()
    next_purge = 0.0
    while not stop.is_set():
        try:
            sweep_once()
            if time.monotonic() >= next_purge:
                purge_once()
                next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        except Exception:
            log.exception("scheduler pass failed; retrying")
        stop.wait(settings.sweep_interval_seconds)
    # Attempts under way finish (or time out) and are recorded before the process exits.
    webhooks.join(settings.webhook_timeout_seconds + 5)
    log.info("scheduler stopped")
