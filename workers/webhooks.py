"""Sending completion webhooks, from a thread of the scheduler process.

Deliveries are sent here rather than as Celery tasks: each waits on a partner's server (up to
PFSYNC_WEBHOOK_TIMEOUT_SECONDS), and on the chunk queue a slow or dead receiver would hold worker slots that records
are waiting for. Retries are timed, which the scheduler already does (the broker has no ETAs here). Every claim
is a leased row taken with SKIP LOCKED, so several schedulers never send the same attempt twice.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx

from core import logs
from core.config import settings
from core.db import session_scope
from core.webhooks.service import (
    SIGNATURE_HEADER,
    DueDelivery,
    claim_due,
    end_without_attempt,
    record_attempt,
    signature,
)

log = logging.getLogger(__name__)
USER_AGENT = "PocketflowsSync-Webhooks/1.0"


def send(client: httpx.Client, delivery: DueDelivery) -> None:
    """Make one attempt at a claimed delivery and record it."""
    with logs.bound(job_id=delivery.job_id, partner_id=delivery.partner_id, request_id=delivery.request_id):
        if delivery.secret is None:
            with session_scope() as session:
                end_without_attempt(session, delivery_id=delivery.id, reason="the webhook was removed; not delivered")
            return
        at = datetime.now(UTC)
        started = time.perf_counter()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature(delivery.secret, int(time.time()), delivery.body),
            "Pocketflows-Event": delivery.event,
            "Pocketflows-Delivery": delivery.id,
        }
        status_code: int | None = None
        error: str | None = None
        try:
            # The response body is never read: a receiver answers with its status code.
            with client.stream("POST", delivery.url, content=delivery.body, headers=headers) as response:
                status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000)
        with session_scope() as session:
            status = record_attempt(
                session,
                delivery_id=delivery.id,
                attempt=delivery.attempt,
                at=at,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
            )
        details = {"delivery_id": delivery.id, "attempt": delivery.attempt, "status_code": status_code}
        if error is None:
            log.info("webhook delivered", extra=details | {"duration_ms": duration_ms})
        else:
            log.warning("webhook attempt failed: %s", error, extra=details | {"delivery_status": status})


class Dispatcher:
    """Keeps up to PFSYNC_WEBHOOK_CONCURRENCY attempts in flight; a slot that frees is refilled at once, so a slow
    receiver holds one slot, never the others' deliveries."""

    def __init__(self, client: httpx.Client, pool: ThreadPoolExecutor) -> None:
        self._client = client
        self._pool = pool
        self._slots = threading.Semaphore(settings.webhook_concurrency)
        self._freed = threading.Event()

    def _free_slots(self) -> int:
        taken = 0
        while self._slots.acquire(blocking=False):
            taken += 1
        return taken

    def _release(self, count: int = 1) -> None:
        for _ in range(count):
            self._slots.release()
        self._freed.set()

    def _send(self, delivery: DueDelivery) -> None:
        try:
            send(self._client, delivery)
        except Exception:
            # The claim's lease runs out and the attempt is made again later.
            log.exception("webhook delivery failed unexpectedly", extra={"delivery_id": delivery.id})
        finally:
            self._release()

    def dispatch(self) -> tuple[int, int]:
        """Claim as many due deliveries as there are free slots and start sending them: (free slots, claimed)."""
        self._freed.clear()
        free = self._free_slots()
        due: list[DueDelivery] = []
        try:
            if free:
                with session_scope() as session:
                    due = claim_due(session, limit=free)
            for delivery in due:
                self._pool.submit(self._send, delivery)
        finally:
            self._release(free - len(due))
        return free, len(due)

    def wait(self, timeout: float) -> None:
        """Until a slot frees or `timeout` passes."""
        self._freed.wait(timeout)


def run_dispatcher(stop: threading.Event) -> None:
    """Send due deliveries until `stop` is set, looking for more every PFSYNC_WEBHOOK_POLL_SECONDS when idle; on
    stop, attempts under way finish and are recorded."""
    # One line per attempt comes from `send`, with the delivery and job; httpx's own would repeat it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency)
    timeout = httpx.Timeout(settings.webhook_timeout_seconds)
    with (
        httpx.Client(timeout=timeout, limits=limits, follow_redirects=False) as client,
        ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="webhook") as pool,
    ):
        dispatcher = Dispatcher(client, pool)
        while not stop.is_set():
            try:
                free, claimed = dispatcher.dispatch()
            except Exception:
                log.exception("webhook pass failed; retrying")
                stop.wait(settings.webhook_poll_seconds)
                continue
            if not free:
                dispatcher.wait(settings.webhook_poll_seconds)  # every slot busy: until one frees
            elif claimed < free:
                stop.wait(settings.webhook_poll_seconds)  # nothing more is due
