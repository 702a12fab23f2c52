"""The job lifecycle: acceptance, reads, the sweeper's lease repair, retention.

A job's records live in `job_chunks` rows; a chunk is the unit a worker claims (core.jobs.processing), released to
the broker a window at a time (core.jobs.admission).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import orjson
import psycopg
from sqlalchemy.orm import Session

from core import ids
from core.config import settings
from core.errors import FieldError, not_found
from core.jobs import repository
from core.jobs.admission import ChunkKey, admit_jobs, release_window
from core.jobs.schemas import COUNTERS, FINISHED
from core.models import SyncJob
from core.records.batch import (
    MAX_CHUNK_BYTES,
    SIZE_CHECKED_PAST,
    BytesRead,
    Chunk,
    ParsedBatch,
    RecordsAt,
    check_count,
    duplicate_errors,
)
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
    dry_run: bool = False,
    api_key_id: str | None = None,
    read: BytesRead | None = None,
) -> Accepted:
    """Store a job and every record, chunk by chunk as the elements arrive; return the chunks to publish once
    the transaction commits. An element that is a `FieldError` (an NDJSON line that was not JSON) fails alone.

    A real job is an accepted write and takes its write sequence now (SPEC §3 rule 7); a dry run takes none.
    `api_key_id` is the key that submitted it (the console shows it). `read`: how many bytes of the body the
    elements were parsed from so far (kept by their parser); given, a chunk is cut at MAX_CHUNK_BYTES of them too,
    and a record larger than MAX_RECORD_BYTES fails with `record_too_large`.
    """
    job = SyncJob(
        id=ids.new_id(ids.JOB),
        partner_id=partner_id,
        type=kind,
        business_id=business_id,
        status="queued",
        dry_run=dry_run,
        seq=None if dry_run else next_write_seq(session),
        chunk_count=0,
        total=0,
        request_id=request_id,
        webhook_url=webhook_url,
        api_key_id=api_key_id,
        **dict.fromkeys(("processed", *COUNTERS, "abandoned_chunks"), 0),
        admitted=False,
    )
    session.add(job)
    session.flush()
    size = settings.chunk_size
    limit = settings.max_batch_records
    batch = ParsedBatch()
    starts: list[int] = []  # each chunk's first index
    progress = read if read is not None else BytesRead()  # stays 0 when not kept
    at = chunk_start = progress.count  # bytes of the body read before the pending records
    with driver_connection(session).cursor() as cur:
        for element in elements:
            before, at = at, progress.count
            if isinstance(element, FieldError):
                batch.reject(element)
            elif at - before > SIZE_CHECKED_PAST:  # large enough to be too large
                batch.add_sized(kind, element, at - before)
            else:
                batch.add(kind, element)
            if batch.count > limit:
                check_count(batch.count)
            if len(batch.records) >= size or at - chunk_start >= MAX_CHUNK_BYTES:
                starts.append(batch.offset)
                _store_chunk(cur, job.id, batch.cut(kind, len(starts) - 1, len(batch.records)))
                chunk_start = at
        check_count(batch.count)
        if batch.records:
            starts.append(batch.offset)
            _store_chunk(cur, job.id, batch.cut(kind, len(starts) - 1, len(batch.records)))
        by_chunk: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for index, errors in duplicate_errors(batch, _stored_records(cur, job.id, starts)).items():
            chunk_no = bisect_right(starts, index) - 1
            by_chunk.setdefault(chunk_no, {})[str(index - starts[chunk_no])] = [e.as_dict() for e in errors]
        if by_chunk:
            repository.add_rejections(cur, job_id=job.id, by_chunk=by_chunk)
        repository.set_job_size(
            cur, job_id=job.id, total=batch.count, chunk_count=len(starts), names_ids=bool(batch.key_hashes.get("id"))
        )
    to_publish = admit_jobs(session, partner_id)
    session.refresh(job)
    return Accepted(job, to_publish)


def _stored_records(cur: psycopg.Cursor[Any], job_id: str, starts: Sequence[int]) -> RecordsAt:
    """Read records of a job back from its stored chunks (`starts`: each one's first index), one chunk in memory at
    a time (for the few records duplicate detection needs to compare)."""

    def records_at(indices: Sequence[int]) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for chunk_no, members in groupby(sorted(indices), key=lambda index: bisect_right(starts, index) - 1):
            first_index, payload = repository.chunk_payload(cur, job_id=job_id, chunk_no=chunk_no)
            elements = orjson.loads(payload)
            for index in members:
                found[index] = elements[index - first_index]
        return found

    return records_at


def _store_chunk(cur: psycopg.Cursor[Any], job_id: str, chunk: Chunk) -> None:
    repository.insert_chunk(
        cur,
        job_id=job_id,
        chunk_no=chunk.chunk_no,
        first_index=chunk.first_index,
        record_count=chunk.record_count,
        payload=chunk.payload,
        rejections=chunk.rejections,
    )


# Before a job has processed anything, its records are assumed to go at this rate (about half what two worker
# processes do on two cores, docs/performance.md); after, at the rate it has gone so far.
ASSUMED_RECORDS_PER_SECOND = 20_000
MAX_RETRY_AFTER_SECONDS = 60


def retry_after_seconds(job: SyncJob, now: datetime) -> int | None:
    """How long to wait before asking about an unfinished job again (`Retry-After`): about the time its remaining
    records should take at the rate it has gone so far, 1 to 60 s; None once the job has finished."""
    if job.status in FINISHED:
        return None
    remaining = max(0, job.total - job.processed)
    rate = float(ASSUMED_RECORDS_PER_SECOND)
    if job.started_at is not None and job.processed > 0:
        elapsed = (now - job.started_at).total_seconds()
        if elapsed > 0:
            rate = job.processed / elapsed
    return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(remaining / rate)))


def get_job(session: Session, *, partner_id: str, job_id: str, for_update: bool = False) -> SyncJob:
    """The partner's job, or `not_found`."""
    if "\x00" in job_id:  # no id holds a NUL, and PostgreSQL refuses to compare text with one
        raise not_found("job")
    job = repository.get_job(session, partner_id=partner_id, job_id=job_id, for_update=for_update)
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
    dry_run: bool | None = None,
) -> tuple[list[SyncJob], bool]:
    """The partner's jobs, newest first (only dry runs, or only real jobs, if `dry_run` says so); whether there are
    more."""
    rows = repository.list_jobs(
        session,
        partner_id=partner_id,
        status=status,
        kind=kind,
        dry_run=dry_run,
        limit=limit + 1,
        starting_after=starting_after,
    )
    return rows[:limit], len(rows) > limit


def sweep(session: Session) -> list[ChunkKey]:
    """Chunks whose lease ran out (their message lost, or their worker gone): lease them again to republish.

    Also admits waiting jobs whose partner has room, in case a finishing worker died before admitting them, and
    releases the window of a job whose window emptied without releasing more (its worker died between commit and
    publish).
    """
    keys = repository.lease_lapsed(session, lease_seconds=settings.lease_seconds)
    for partner_id in repository.partners_waiting(session):
        keys += admit_jobs(session, partner_id)
    for job_id in repository.stalled_jobs(session):
        keys += release_window(session, job_id, settings.job_parallelism)
    return keys


def purge_expired_jobs(session: Session) -> int:
    """Delete jobs (and their records and results) finished more than the retention ago; their record counts
    stay in /metrics (`purged_record_counts`)."""
    return repository.purge_finished_before(session, days=settings.job_retention_days)


def unfinished_jobs(session: Session, *, limit: int) -> tuple[list[tuple[SyncJob, str]], int, datetime]:
    """Every partner's oldest unfinished jobs (up to `limit`) with the partner's name, how many there are in all,
    and the database's clock (for their ages): what an operator's status shows."""
    return repository.unfinished_jobs(session, limit=limit)


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of every partner's jobs, newest first, each with its partner's name, and whether there are newer
    and older ones beyond it (keyset paging: no count of the jobs)."""

    jobs: list[tuple[SyncJob, str]]
    has_newer: bool
    has_older: bool


def list_all_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    partner_id: str | None = None,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> JobPage:
    """Every partner's jobs for the operator console, newest first: the page after `starting_after` (older
    jobs), or the page before `ending_before` (newer ones), or the newest."""
    rows = repository.list_all_jobs(
        session,
        status=status,
        kind=kind,
        partner_id=partner_id,
        limit=limit + 1,
        starting_after=starting_after,
        ending_before=ending_before,
    )
    if ending_before:
        return JobPage(rows[-limit:], has_newer=len(rows) > limit, has_older=True)
    return JobPage(rows[:limit], has_newer=starting_after is not None, has_older=len(rows) > limit)


def find_job(session: Session, *, job_id: str) -> tuple[SyncJob, str]:
    """Any partner's job, with the partner's name (for operators), or `not_found`."""
    found = None if "\x00" in job_id else repository.job_with_partner(session, job_id=job_id)
    if found is None:
        raise not_found("job")
    return found


def chunk_page(session: Session, *, job_id: str, after: int, limit: int) -> tuple[list[Any], bool]:
    """A page of a job's chunks in order (their state, attempts and duration, not their records); whether there
    are more."""
    rows = repository.chunk_summaries(session, job_id=job_id, after=after, limit=limit + 1)
    return rows[:limit], len(rows) > limit


def partner_job_totals(session: Session, *, partner_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per partner: its jobs kept (`jobs`), how many are `unfinished`, and their records (`total`, `processed`,
    and each outcome), from the jobs' counters."""
    return {
        row.partner_id: {name: int(value) for name, value in row._mapping.items() if name != "partner_id"}
        for row in repository.partner_job_totals(session, partner_ids=partner_ids)
    }
