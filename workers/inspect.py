"""Which Celery workers are alive and what they run, asked by broadcast: `pfsync status` and the console's overview.

A broadcast waits the whole timeout for replies (it cannot know how many workers there are), so its three
questions are asked at once and take one timeout together.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from workers.app import celery_app, configure_broker
from workers.publish import PROCESS_CHUNK

INSPECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class RunningChunk:
    """A chunk a worker is processing right now, and for how long it has (by the worker's clock)."""

    job_id: str
    chunk_no: int
    seconds: float | None


@dataclass(frozen=True)
class WorkerState:
    name: str
    concurrency: int | None
    tasks_done: int | None
    queues: list[str] | None
    running: list[RunningChunk] = field(default_factory=list)


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _running(tasks: Any, now: float) -> list[RunningChunk]:
    found = []
    for task in tasks if isinstance(tasks, list) else []:
        args = task.get("args") if isinstance(task, dict) else None
        if task.get("name") != PROCESS_CHUNK or not isinstance(args, list | tuple) or len(args) != 2:
            continue
        started = task.get("time_start")
        seconds = round(max(0.0, now - started), 1) if isinstance(started, int | float) else None
        found.append(RunningChunk(job_id=str(args[0]), chunk_no=int(args[1]), seconds=seconds))
    return found


def live_workers(timeout: float = INSPECT_TIMEOUT) -> list[WorkerState]:
    """The Celery workers that answer a broadcast within `timeout`, with their pool size, the tasks they have run,
    their queues and the chunks they are processing."""
    configure_broker()

    def ask(question: str) -> dict[str, Any]:
        answer: dict[str, Any] | None = getattr(celery_app.control.inspect(timeout=timeout), question)()
        return answer or {}

    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = {question: pool.submit(ask, question) for question in ("stats", "active_queues", "active")}
        stats, queues, active = (replies[q].result() for q in ("stats", "active_queues", "active"))
    now = time.time()
    workers = []
    for name in sorted(set(stats) | set(queues) | set(active)):
        info = stats.get(name) or {}
        pool_info = info.get("pool") or {}
        totals = info.get("total")
        consumed = queues.get(name)
        workers.append(
            WorkerState(
                name=name,
                concurrency=_as_int(pool_info.get("max-concurrency")),
                tasks_done=sum(totals.values()) if isinstance(totals, dict) else None,
                queues=[q["name"] for q in consumed] if isinstance(consumed, list) else None,
                running=_running(active.get(name), now),
            )
        )
    return workers
