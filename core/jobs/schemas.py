"""How a job is shown: its status, its counters and its view in the API, webhooks and the console."""

from __future__ import annotations

from typing import Any

from core.jobs.status import FINISHED, ChunkState, JobStatus
from core.models import SyncJob
from core.records.rules import OUTCOMES
from core.records.service import rfc3339

# A job's counter per outcome: one column of sync_jobs each.
COUNTERS: tuple[str, ...] = OUTCOMES


__all__ = ["COUNTERS", "FINISHED", "ChunkState", "JobStatus", "job_view"]


def job_view(job: SyncJob) -> dict[str, Any]:
    """A job as the API shows it."""
    return {
        "id": job.id,
        "object": "sync_job",
        "type": job.type,
        "business_id": job.business_id,
        "dry_run": job.dry_run,
        "status": job.status,
        "counts": {
            "total": job.total,
            "processed": job.processed,
            **{name: getattr(job, name) for name in COUNTERS},
        },
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at) if job.started_at else None,
        "finished_at": rfc3339(job.finished_at) if job.finished_at else None,
        "cancel_requested_at": rfc3339(job.cancel_requested_at) if job.cancel_requested_at else None,
        "links": {"self": f"/jobs/{job.id}", "results": f"/jobs/{job.id}/results"},
    }
