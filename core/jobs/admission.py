"""Admission: which of a partner's jobs run, and which of a job's chunks are released to the broker.

Only a window of each job's chunks is released at a time (PFSYNC_JOB_PARALLELISM), and only a few jobs per partner
are admitted at once (PFSYNC_MAX_ACTIVE_JOBS_PER_PARTNER), so a large job cannot starve the others. Released
chunks carry a lease: whatever the broker loses, the sweeper publishes again once the lease runs out.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.config import settings
from core.jobs import repository
from core.jobs.repository import ChunkKey

__all__ = ["ChunkKey", "admit_jobs", "release_window"]


def release_window(session: Session, job_id: str, count: int) -> list[ChunkKey]:
    """Release up to `count` more pending chunks of a job to the broker, with a fresh lease."""
    return repository.release_pending(session, job_id=job_id, count=count, lease_seconds=settings.lease_seconds)


def admit_jobs(session: Session, partner_id: str) -> list[ChunkKey]:
    """Admit the partner's oldest waiting jobs while it has fewer than the cap running; release their windows."""
    repository.lock_partner(session, partner_id=partner_id)
    room = settings.max_active_jobs_per_partner - repository.count_admitted(session, partner_id=partner_id)
    if room <= 0:
        return []
    released: list[ChunkKey] = []
    for job_id in sorted(repository.admit_oldest_waiting(session, partner_id=partner_id, count=room)):
        released += release_window(session, job_id, settings.job_parallelism)
    return released
