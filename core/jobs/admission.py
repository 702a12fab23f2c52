"""Admission: which of a partner's jobs run, and which of a job's chunks are released to the broker.

Only a window of each job's chunks is released at a time (PFSYNC_JOB_PARALLELISM), and only a few jobs per partner
are admitted at once (PFSYNC_MAX_ACTIVE_JOBS_PER_PARTNER), so a large job cannot starve the others. Released
chunks carry a lease: whatever the broker loses, the sweeper publishes again once the lease runs out.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings

# A chunk as the broker names it: its job and its number.
ChunkKey = tuple[str, int]


def _lock_partner(session: Session, partner_id: str) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:p, 11))"), {"p": partner_id})


def release_window(session: Session, job_id: str, count: int) -> list[ChunkKey]:
    """Release up to `count` more pending chunks of a job to the broker, with a fresh lease."""
    rows = session.execute(
        text(
            "UPDATE job_chunks SET state = 'queued', lease_until = now() + make_interval(secs => :lease) "
            "WHERE (job_id, chunk_no) IN (SELECT job_id, chunk_no FROM job_chunks "
            "  WHERE job_id = :job AND state = 'pending' ORDER BY chunk_no LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING job_id, chunk_no"
        ),
        {"job": job_id, "n": count, "lease": settings.lease_seconds},
    ).all()
    return [(r.job_id, r.chunk_no) for r in rows]


def admit_jobs(session: Session, partner_id: str) -> list[ChunkKey]:
    """Admit the partner's oldest waiting jobs while it has fewer than the cap running; release their windows."""
    _lock_partner(session, partner_id)
    active = session.execute(
        text("SELECT count(*) FROM sync_jobs WHERE partner_id = :p AND finished_at IS NULL AND admitted"),
        {"p": partner_id},
    ).scalar_one()
    room = settings.max_active_jobs_per_partner - active
    if room <= 0:
        return []
    waiting = session.execute(
        text(
            "UPDATE sync_jobs SET admitted = true WHERE id IN (SELECT id FROM sync_jobs "
            "  WHERE partner_id = :p AND finished_at IS NULL AND NOT admitted ORDER BY id LIMIT :n) RETURNING id"
        ),
        {"p": partner_id, "n": room},
    ).scalars()
    released: list[ChunkKey] = []
    for job_id in sorted(waiting):
        released += release_window(session, job_id, settings.job_parallelism)
    return released
