"""The states of a job and of its chunks, declared once for the service, its API, metrics and command line."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """queued → running → completed | cancelled | failed (SPEC §4 Jobs)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED: tuple[str, ...] = (JobStatus.COMPLETED.value, JobStatus.CANCELLED.value, JobStatus.FAILED.value)


class ChunkState(StrEnum):
    """A chunk waits `pending` until its job's window releases it to the broker (`queued`), then is `done`."""

    PENDING = "pending"
    QUEUED = "queued"
    DONE = "done"
