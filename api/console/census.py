"""The live workers for the console's overview, asked in the background.

Asking the workers is a broadcast that waits its whole timeout (one second) for replies, longer than a page may
take. So a thread of this API process asks every few seconds while someone looks at the console (and stops a
minute after the last look), and the overview shows its latest answer with its age.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.ops.metrics import read_broker
from workers.inspect import WorkerState, live_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CensusReading:
    """The latest answer: the workers that replied (None before the first), when, and what went wrong if it did."""

    workers: list[WorkerState] | None = None
    taken_at: float | None = None
    error: str | None = None

    def age(self) -> float | None:
        return None if self.taken_at is None else max(0.0, time.time() - self.taken_at)


def _ask() -> list[WorkerState]:
    read_broker()  # fails fast when the broker is down; a broadcast would retry the connection for long
    return live_workers()


class WorkerCensus:
    """Asks the workers every `every` seconds while `read` was called in the last `idle_after` seconds."""

    def __init__(self, every: float = 4.0, idle_after: float = 60.0, ask: Callable[[], list[WorkerState]] = _ask):
        self.every = every
        self.idle_after = idle_after
        self._ask = ask
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wanted_at = 0.0
        self._reading = CensusReading()

    def read(self) -> CensusReading:
        """The latest answer; asking starts (again) in the background if it had stopped."""
        with self._lock:
            self._wanted_at = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="console-worker-census", daemon=True)
                self._thread.start()
            return self._reading

    def _run(self) -> None:
        while True:
            with self._lock:
                if time.monotonic() - self._wanted_at > self.idle_after:
                    self._thread = None
                    return
            started = time.monotonic()
            try:
                reading = CensusReading(self._ask(), time.time())
            except Exception as exc:  # the broker is down: say so on the page, and keep asking
                log.warning("console: cannot ask the workers: %s", exc)
                reading = CensusReading(None, time.time(), f"cannot reach the broker ({type(exc).__name__})")
            with self._lock:
                self._reading = reading
            time.sleep(max(0.0, self.every - (time.monotonic() - started)))


census = WorkerCensus()
