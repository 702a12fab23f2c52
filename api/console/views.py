"""What the console's templates show of a job, a chunk or a partner: plain values computed once per row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.jobs.schemas import COUNTERS
from core.jobs.status import FINISHED
from core.models import SyncJob


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as a row or a page header: progress, and how long it waited and has been processed."""

    id: str
    partner_id: str
    partner_name: str
    type: str
    # A dry run (SPEC §9): its counts say what would have happened; nothing was written.
    dry_run: bool
    business_id: str | None
    status: str
    total: int
    processed: int
    failed: int
    counts: dict[str, int]
    percent: int
    finished: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    # From acceptance until a worker first took it up (until now while it waits).
    queue_wait: float
    # From the first chunk taken up until the last one finished (until now while it runs); None before.
    processing: float | None
    api_key_id: str | None


def job_row(job: SyncJob, partner_name: str, now: datetime | None = None) -> JobRow:
    """The view of a job at `now` (default: the present)."""
    now = now or datetime.now(UTC)
    started, finished = job.started_at, job.finished_at
    queue_wait = ((started or now) - job.created_at).total_seconds()
    processing = None if started is None else ((finished or now) - started).total_seconds()
    return JobRow(
        id=job.id,
        partner_id=job.partner_id,
        partner_name=partner_name,
        type=job.type,
        dry_run=job.dry_run,
        business_id=job.business_id,
        status=job.status,
        total=job.total,
        processed=job.processed,
        failed=job.failed,
        counts={name: getattr(job, name) for name in COUNTERS},
        percent=100 * job.processed // job.total if job.total else 100,
        finished=job.status in FINISHED,
        created_at=job.created_at,
        started_at=started,
        finished_at=finished,
        cancel_requested_at=job.cancel_requested_at,
        queue_wait=max(0.0, queue_wait),
        processing=None if processing is None else max(0.0, processing),
        api_key_id=job.api_key_id,
    )


@dataclass(frozen=True, slots=True)
class ChunkRow:
    chunk_no: int
    first_index: int
    last_index: int
    record_count: int
    state: str
    attempts: int
    lease_until: datetime | None
    processed_at: datetime | None
    duration_ms: int | None
    outcomes: dict[str, int]


def chunk_row(row: Any) -> ChunkRow:
    return ChunkRow(
        chunk_no=row.chunk_no,
        first_index=row.first_index,
        last_index=row.first_index + row.record_count - 1,
        record_count=row.record_count,
        state=row.state,
        attempts=row.attempts,
        lease_until=row.lease_until,
        processed_at=row.processed_at,
        duration_ms=row.duration_ms,
        outcomes={k: int(v) for k, v in (row.outcome_counts or {}).items() if v},
    )
