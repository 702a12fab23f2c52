"""The job lifecycle: acceptance, reads, the sweeper's lease repair, retention.

A job's records live in `job_chunks` rows; a chunk is the unit a worker claims (core.jobs.processing), released to
the broker a window at a time (core.jobs.admission).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import orjson
import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core import ids
from core.config import settings
from core.errors import FieldError, not_found
from core.jobs.admission import ChunkKey, admit_jobs, release_window
from core.jobs.schemas import COUNTERS
from core.models import Partner, SyncJob
from core.records.batch import Chunk, ParsedBatch, RecordsAt, check_count, duplicate_errors
from core.records.repository import driver_connection
from core.records.service import next_write_seq


@dataclass(frozen=True, slots=True)
class Accepted:
    job: SyncJob
    to_publish: list[ChunkKey]


def accept_batch(
    session: Session,
    *,
    partner_id: str,
    kind: str,
    business_id: str | None,
    elements: Iterable[Any],
    request_id: str | None = None,
    webhook_url: str | None = None,
) -> Accepted:
    """Store a job and every record, chunk by chunk as the elements arrive; return the chunks to publish once
    the transaction commits. An element that is a `FieldError` (an NDJSON line that was not JSON) fails alone."""
    job = SyncJob(
        id=ids.new_id(ids.JOB),
        partner_id=partner_id,
        type=kind,
        business_id=business_id,
        status="queued",
        seq=next_write_seq(session),
        chunk_count=0,
        total=0,
        request_id=request_id,
        webhook_url=webhook_url,
        **dict.fromkeys(("processed", *COUNTERS, "abandoned_chunks"), 0),
        admitted=False,
    )
    session.add(job)
    session.flush()
    size = settings.chunk_size
    limit = settings.max_batch_records
    batch = ParsedBatch()
    chunk_no = 0
    with driver_connection(session).cursor() as cur:
        for element in elements:
            if isinstance(element, FieldError):
                batch.reject(element)
            else:
                batch.add(kind, element)
            if batch.count > limit:
                check_count(batch.count)
            if len(batch.records) >= size:
                _store_chunk(cur, job.id, batch.cut(kind, chunk_no, size))
                chunk_no += 1
        check_count(batch.count)
        if batch.records:
            _store_chunk(cur, job.id, batch.cut(kind, chunk_no, size))
            chunk_no += 1
        by_chunk: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for index, errors in duplicate_errors(batch, _stored_records(cur, job.id, size)).items():
            by_chunk.setdefault(index // size, {})[str(index % size)] = [e.as_dict() for e in errors]
        if by_chunk:
            cur.executemany(
                # A record may have been rejected already (a value JSON cannot carry): its errors and the
                # duplicate's are appended, not replaced.
                "UPDATE job_chunks SET rejections = coalesce(rejections, '{}'::jsonb) || "
                "  (SELECT jsonb_object_agg(k, coalesce(rejections -> k, '[]'::jsonb) || v) "
                "   FROM jsonb_each(%s::jsonb) AS found(k, v)) "
                "WHERE job_id = %s AND chunk_no = %s",
                [(_json(found), job.id, number) for number, found in by_chunk.items()],
            )
        cur.execute("UPDATE sync_jobs SET total = %s, chunk_count = %s WHERE id = %s", (batch.count, chunk_no, job.id))
    to_publish = admit_jobs(session, partner_id)
    session.refresh(job)
    return Accepted(job, to_publish)


def _stored_records(cur: psycopg.Cursor[Any], job_id: str, size: int) -> RecordsAt:
    """Read records of a job back from its stored chunks, one chunk in memory at a time (for the few records
    duplicate detection needs to compare)."""

    def records_at(indices: Sequence[int]) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for chunk_no, members in groupby(sorted(indices), key=lambda index: index // size):
            cur.execute(
                "SELECT first_index, payload FROM job_chunks WHERE job_id = %s AND chunk_no = %s", (job_id, chunk_no)
            )
            row = cur.fetchone()
            assert row is not None
            first_index, payload = row
            elements = orjson.loads(payload)
            for index in members:
                found[index] = elements[index - first_index]
        return found

    return records_at


def _store_chunk(cur: psycopg.Cursor[Any], job_id: str, chunk: Chunk) -> None:
    cur.execute(
        "INSERT INTO job_chunks (job_id, chunk_no, first_index, record_count, payload, rejections) "
        "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
        (
            job_id,
            chunk.chunk_no,
            chunk.first_index,
            chunk.record_count,
            chunk.payload,
            None if chunk.rejections is None else _json(chunk.rejections),
        ),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def get_job(session: Session, *, partner_id: str, job_id: str, for_update: bool = False) -> SyncJob:
    """The partner's job, or `not_found`."""
    if "\x00" in job_id:  # no id holds a NUL, and PostgreSQL refuses to compare text with one
        raise not_found("job")
    query = select(SyncJob).where(SyncJob.id == job_id, SyncJob.partner_id == partner_id)
    if for_update:
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None:
        raise not_found("job")
    return job


def list_jobs(
    session: Session,
    *,
    partner_id: str,
    status: str | None,
    kind: str | None,
    limit: int,
    starting_after: str | None,
) -> tuple[list[SyncJob], bool]:
    """The partner's jobs, newest first."""
    query = select(SyncJob).where(SyncJob.partner_id == partner_id)
    if status:
        query = query.where(SyncJob.status == status)
    if kind:
        query = query.where(SyncJob.type == kind)
    if starting_after:
        query = query.where(SyncJob.id < starting_after)
    rows = list(session.scalars(query.order_by(SyncJob.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def sweep(session: Session) -> list[ChunkKey]:
    """Chunks whose lease ran out (their message lost, or their worker gone): lease them again to republish.

    Also admits waiting jobs whose partner has room, in case a finishing worker died before admitting them.
    """
    rows = session.execute(
        text(
            "UPDATE job_chunks SET lease_until = now() + make_interval(secs => :lease) "
            "WHERE (job_id, chunk_no) IN (SELECT job_id, chunk_no FROM job_chunks "
            "  WHERE state = 'queued' AND lease_until < now() ORDER BY lease_until LIMIT 5000 "
            "  FOR UPDATE SKIP LOCKED) RETURNING job_id, chunk_no"
        ),
        {"lease": settings.lease_seconds},
    ).all()
    keys = [(r.job_id, r.chunk_no) for r in rows]
    partners = session.execute(
        text("SELECT DISTINCT partner_id FROM sync_jobs WHERE finished_at IS NULL AND NOT admitted")
    ).scalars()
    for partner_id in list(partners):
        keys += admit_jobs(session, partner_id)
    # A job whose window emptied without releasing more (its worker died between commit and publish).
    stalled = session.execute(
        text(
            "SELECT j.id FROM sync_jobs j WHERE j.finished_at IS NULL AND j.admitted AND NOT EXISTS "
            "(SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.state = 'queued') "
            "AND EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.state = 'pending')"
        )
    ).scalars()
    for job_id in list(stalled):
        keys += release_window(session, job_id, settings.job_parallelism)
    return keys


def purge_expired_jobs(session: Session) -> int:
    """Delete jobs (and their records and results) finished more than the retention ago.

    Their record counts move to `purged_record_counts` in the same statement, so the records counter of /metrics
    (jobs kept plus jobs purged) never goes down.
    """
    counts = ", ".join(f"('{name}', {name})" for name in COUNTERS)
    return int(
        session.execute(
            text(
                "WITH gone AS (DELETE FROM sync_jobs WHERE finished_at < now() - make_interval(days => :d) "
                f"  RETURNING {', '.join(COUNTERS)}), "
                "folded AS (INSERT INTO purged_record_counts (outcome, records) "
                f"  SELECT c.outcome, sum(c.n) FROM gone, LATERAL (VALUES {counts}) AS c(outcome, n) "
                "  GROUP BY c.outcome HAVING sum(c.n) > 0 "
                "  ON CONFLICT (outcome) DO UPDATE SET records = purged_record_counts.records + EXCLUDED.records) "
                "SELECT count(*) FROM gone"
            ),
            {"d": settings.job_retention_days},
        ).scalar_one()
    )


def unfinished_jobs(session: Session, *, limit: int) -> tuple[list[tuple[SyncJob, str]], int, datetime]:
    """Every partner's oldest unfinished jobs (up to `limit`) with the partner's name, how many there are in all,
    and the database's clock (for their ages): what an operator's status shows."""
    unfinished = SyncJob.finished_at.is_(None)
    now = session.execute(select(func.now())).scalar_one()
    count = session.execute(select(func.count()).select_from(SyncJob).where(unfinished)).scalar_one()
    rows = session.execute(
        select(SyncJob, Partner.name)
        .join(Partner, Partner.id == SyncJob.partner_id)
        .where(unfinished)
        .order_by(SyncJob.id)
        .limit(limit)
    ).all()
    return [(job, name) for job, name in rows], int(count), now
