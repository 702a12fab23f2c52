"""Every statement on jobs and their chunks: `sync_jobs` and `job_chunks`.

The rules that decide when these run live in core.jobs.service (acceptance, reads, sweep, retention),
core.jobs.admission and core.jobs.processing; here are only the statements, each a function. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import Row, func, select, text
from sqlalchemy.orm import Session

from core.jobs.status import ChunkState, JobStatus
from core.models import Partner, SyncJob
from core.records.repository import driver_connection, text_array
from core.records.rules import OUTCOMES

# A chunk as the broker names it: its job and its number.
ChunkKey = tuple[str, int]

_QUEUED, _PENDING, _DONE = ChunkState.QUEUED.value, ChunkState.PENDING.value, ChunkState.DONE.value


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- jobs -------------------------------------------------------------------------------------------------------


def get_job(session: Session, *, partner_id: str, job_id: str, for_update: bool = False) -> SyncJob | None:
    """The partner's job, or None."""
    query = select(SyncJob).where(SyncJob.id == job_id, SyncJob.partner_id == partner_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def list_jobs(
    session: Session,
    *,
    partner_id: str,
    status: str | None,
    kind: str | None,
    dry_run: bool | None,
    limit: int,
    starting_after: str | None,
) -> list[SyncJob]:
    """Up to `limit` of the partner's jobs, newest first."""
    query = select(SyncJob).where(SyncJob.partner_id == partner_id)
    if status:
        query = query.where(SyncJob.status == status)
    if kind:
        query = query.where(SyncJob.type == kind)
    if dry_run is not None:
        query = query.where(SyncJob.dry_run.is_(dry_run))
    if starting_after:
        query = query.where(SyncJob.id < starting_after)
    return list(session.scalars(query.order_by(SyncJob.id.desc()).limit(limit)))


def set_job_size(cur: psycopg.Cursor[Any], *, job_id: str, total: int, chunk_count: int, names_ids: bool) -> None:
    cur.execute(
        "UPDATE sync_jobs SET total = %s, chunk_count = %s, names_ids = %s WHERE id = %s",
        (total, chunk_count, names_ids, job_id),
    )


def mark_running(session: Session, *, job_id: str) -> None:
    """A queued job is running from now (the time of the claim, not of a transaction begun earlier)."""
    session.execute(
        text(
            f"UPDATE sync_jobs SET status = '{JobStatus.RUNNING}', "
            "started_at = greatest(clock_timestamp(), created_at) "
            f"WHERE id = :j AND status = '{JobStatus.QUEUED}'"
        ),
        {"j": job_id},
    )


def add_outcomes(session: Session, *, job_id: str, counts: Mapping[str, int], abandoned: bool) -> Row[Any]:
    """Add a chunk's outcomes to its job's counters; the job ends when every record has one. Returns
    (finished, cancel): whether the job ended now, whether a cancel was requested."""
    n = sum(counts.values())
    params = {name: counts.get(name, 0) for name in OUTCOMES}
    return session.execute(
        text(
            "UPDATE sync_jobs SET processed = processed + :n, created = created + :created, "
            "replaced = replaced + :replaced, unchanged = unchanged + :unchanged, "
            "superseded = superseded + :superseded, failed = failed + :failed, cancelled = cancelled + :cancelled, "
            "abandoned_chunks = abandoned_chunks + :abandoned, "
            "started_at = coalesce(started_at, greatest(c.ts, created_at)), "
            "status = CASE WHEN processed + :n >= total THEN "
            f"  CASE WHEN cancel_requested_at IS NOT NULL THEN '{JobStatus.CANCELLED}' "
            f"       WHEN abandoned_chunks + :abandoned > 0 THEN '{JobStatus.FAILED}' "
            f"       ELSE '{JobStatus.COMPLETED}' END "
            f"  ELSE '{JobStatus.RUNNING}' END, "
            "finished_at = CASE WHEN processed + :n >= total "
            "  THEN greatest(c.ts, created_at, started_at, cancel_requested_at) END "
            "FROM (SELECT clock_timestamp() AS ts) AS c "
            "WHERE id = :j RETURNING finished_at IS NOT NULL AS finished, cancel_requested_at IS NOT NULL AS cancel"
        ),
        {**params, "n": n, "abandoned": int(abandoned), "j": job_id},
    ).one()


def unfinished_jobs_of_key(session: Session, *, key_id: str) -> list[tuple[str, str]]:
    """(id, partner_id) of the jobs a key submitted that have not ended, oldest first."""
    rows = session.execute(
        text(
            "SELECT id, partner_id FROM sync_jobs WHERE api_key_id = :k AND status IN (:queued, :running) ORDER BY id"
        ),
        {"k": key_id, "queued": JobStatus.QUEUED.value, "running": JobStatus.RUNNING.value},
    )
    return [(row.id, row.partner_id) for row in rows]


def request_cancel(session: Session, *, job_id: str) -> None:
    session.execute(
        text(
            "UPDATE sync_jobs SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()) WHERE id = :j"
        ),
        {"j": job_id},
    )


def purge_finished_before(session: Session, *, days: int) -> int:
    """Delete jobs finished more than `days` ago, folding their record counts into `purged_record_counts` in the
    same statement (so the records counter of /metrics never goes down); how many were deleted."""
    counts = ", ".join(f"('{name}', {name})" for name in OUTCOMES)
    return int(
        session.execute(
            text(
                "WITH gone AS (DELETE FROM sync_jobs WHERE finished_at < now() - make_interval(days => :d) "
                f"  RETURNING dry_run, {', '.join(OUTCOMES)}), "
                "folded AS (INSERT INTO purged_record_counts (outcome, dry_run, records) "
                f"  SELECT c.outcome, gone.dry_run, sum(c.n) FROM gone, LATERAL (VALUES {counts}) AS c(outcome, n) "
                "  GROUP BY c.outcome, gone.dry_run HAVING sum(c.n) > 0 "
                "  ON CONFLICT (outcome, dry_run) DO UPDATE "
                "  SET records = purged_record_counts.records + EXCLUDED.records) "
                "SELECT count(*) FROM gone"
            ),
            {"d": days},
        ).scalar_one()
    )


def unfinished_jobs(session: Session, *, limit: int) -> tuple[list[tuple[SyncJob, str]], int, datetime]:
    """The oldest unfinished jobs of every partner with the partner's name, how many there are, the database's
    clock."""
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


# --- every partner's jobs (the operator console) ------------------------------------------------------------


def list_all_jobs(
    session: Session,
    *,
    status: str | None,
    kind: str | None,
    partner_id: str | None,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> list[tuple[SyncJob, str]]:
    """Up to `limit` jobs of every partner with the partner's name, newest first: older than `starting_after`, or
    the newest ones just newer than `ending_before`. Each filter has an index that yields this order
    (ix_sync_jobs_status_id, _type_id, _type_status_id, _partner_id_id), so a page reads only its own rows."""
    query = select(SyncJob, Partner.name).join(Partner, Partner.id == SyncJob.partner_id)
    if status:
        query = query.where(SyncJob.status == status)
    if kind:
        query = query.where(SyncJob.type == kind)
    if partner_id:
        query = query.where(SyncJob.partner_id == partner_id)
    if ending_before:
        newer = session.execute(query.where(SyncJob.id > ending_before).order_by(SyncJob.id).limit(limit)).all()
        return [(job, name) for job, name in reversed(newer)]
    if starting_after:
        query = query.where(SyncJob.id < starting_after)
    rows = session.execute(query.order_by(SyncJob.id.desc()).limit(limit)).all()
    return [(job, name) for job, name in rows]


def job_with_partner(session: Session, *, job_id: str) -> tuple[SyncJob, str] | None:
    """Any partner's job with the partner's name, or None."""
    row = session.execute(
        select(SyncJob, Partner.name).join(Partner, Partner.id == SyncJob.partner_id).where(SyncJob.id == job_id)
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def chunk_summaries(session: Session, *, job_id: str, after: int, limit: int) -> list[Row[Any]]:
    """Up to `limit` chunks of a job numbered past `after`: (chunk_no, first_index, record_count, state, attempts,
    lease_until, processed_at, duration_ms, outcome_counts), never their records or results."""
    return list(
        session.execute(
            text(
                "SELECT chunk_no, first_index, record_count, state, attempts, lease_until, processed_at, duration_ms, "
                "outcome_counts FROM job_chunks WHERE job_id = :j AND chunk_no > :after ORDER BY chunk_no LIMIT :n"
            ),
            {"j": job_id, "after": after, "n": limit},
        ).all()
    )


def error_code_counts(session: Session, *, job_id: str) -> list[Row[Any]]:
    """(code, errors) summed over the job's processed chunks, most frequent first."""
    return list(
        session.execute(
            text(
                "SELECT e.key AS code, sum(e.value::bigint) AS errors FROM job_chunks c, "
                "jsonb_each_text(c.error_counts) AS e WHERE c.job_id = :j AND c.error_counts IS NOT NULL "
                "GROUP BY e.key ORDER BY errors DESC, code"
            ),
            {"j": job_id},
        ).all()
    )


def chunks_without_error_counts(session: Session, *, job_id: str) -> list[int]:
    """Done chunks with failed records whose errors were not counted when they were processed (before the
    count was kept)."""
    return list(
        session.execute(
            text(
                f"SELECT chunk_no FROM job_chunks WHERE job_id = :j AND state = '{_DONE}' AND error_counts IS NULL "
                "AND coalesce((outcome_counts ->> 'failed')::int, 0) > 0 ORDER BY chunk_no"
            ),
            {"j": job_id},
        ).scalars()
    )


def partner_job_totals(session: Session, *, partner_ids: Sequence[str]) -> list[Row[Any]]:
    """Per partner of `partner_ids`: (partner_id, jobs, unfinished, total, processed, then each outcome counter in
    OUTCOMES order), over the jobs kept."""
    sums = ", ".join(f"coalesce(sum({name}), 0) AS {name}" for name in OUTCOMES)
    return list(
        session.execute(
            text(
                "SELECT partner_id, count(*) AS jobs, count(*) FILTER (WHERE finished_at IS NULL) AS unfinished, "
                f"coalesce(sum(total), 0) AS total, coalesce(sum(processed), 0) AS processed, {sums} "
                "FROM sync_jobs WHERE partner_id = ANY(:p) GROUP BY partner_id"
            ),
            {"p": list(partner_ids)},
        ).all()
    )


# --- admission --------------------------------------------------------------------------------------------------


def lock_partner(session: Session, *, partner_id: str) -> None:
    """Serialise admission decisions of one partner until the transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:p, 11))"), {"p": partner_id})


def count_admitted(session: Session, *, partner_id: str) -> int:
    return int(
        session.execute(
            text("SELECT count(*) FROM sync_jobs WHERE partner_id = :p AND finished_at IS NULL AND admitted"),
            {"p": partner_id},
        ).scalar_one()
    )


def admit_oldest_waiting(session: Session, *, partner_id: str, count: int) -> list[str]:
    """Admit up to `count` of the partner's oldest waiting jobs; their ids."""
    return list(
        session.execute(
            text(
                "UPDATE sync_jobs SET admitted = true WHERE id IN (SELECT id FROM sync_jobs "
                "  WHERE partner_id = :p AND finished_at IS NULL AND NOT admitted ORDER BY id LIMIT :n) RETURNING id"
            ),
            {"p": partner_id, "n": count},
        ).scalars()
    )


def partners_waiting(session: Session) -> list[str]:
    """Partners with a job not admitted yet."""
    return list(
        session.execute(
            text("SELECT DISTINCT partner_id FROM sync_jobs WHERE finished_at IS NULL AND NOT admitted")
        ).scalars()
    )


def release_pending(session: Session, *, job_id: str, count: int, lease_seconds: int) -> list[ChunkKey]:
    """Queue up to `count` more pending chunks of a job, in order, with a fresh lease."""
    rows = session.execute(
        text(
            f"UPDATE job_chunks SET state = '{_QUEUED}', lease_until = now() + make_interval(secs => :lease) "
            "WHERE (job_id, chunk_no) IN (SELECT job_id, chunk_no FROM job_chunks "
            f"  WHERE job_id = :job AND state = '{_PENDING}' ORDER BY chunk_no LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING job_id, chunk_no"
        ),
        {"job": job_id, "n": count, "lease": lease_seconds},
    ).all()
    return [(r.job_id, r.chunk_no) for r in rows]


def lease_lapsed(session: Session, *, lease_seconds: int, limit: int = 5000) -> list[ChunkKey]:
    """Queued chunks whose lease ran out, leased again (to be published again)."""
    rows = session.execute(
        text(
            "UPDATE job_chunks SET lease_until = now() + make_interval(secs => :lease) "
            "WHERE (job_id, chunk_no) IN (SELECT job_id, chunk_no FROM job_chunks "
            f"  WHERE state = '{_QUEUED}' AND lease_until < now() ORDER BY lease_until LIMIT :limit "
            "  FOR UPDATE SKIP LOCKED) RETURNING job_id, chunk_no"
        ),
        {"lease": lease_seconds, "limit": limit},
    ).all()
    return [(r.job_id, r.chunk_no) for r in rows]


def stalled_jobs(session: Session) -> list[str]:
    """Admitted jobs with pending chunks and none queued: their window emptied without releasing more."""
    return list(
        session.execute(
            text(
                "SELECT j.id FROM sync_jobs j WHERE j.finished_at IS NULL AND j.admitted AND NOT EXISTS "
                f"(SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.state = '{_QUEUED}') "
                f"AND EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.state = '{_PENDING}')"
            )
        ).scalars()
    )


# --- chunks -----------------------------------------------------------------------------------------------------


def insert_chunk(
    cur: psycopg.Cursor[Any],
    *,
    job_id: str,
    chunk_no: int,
    first_index: int,
    record_count: int,
    payload: bytes,
    rejections: dict[str, Any] | None,
) -> None:
    cur.execute(
        "INSERT INTO job_chunks (job_id, chunk_no, first_index, record_count, payload, rejections) "
        "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
        (job_id, chunk_no, first_index, record_count, payload, None if rejections is None else _json(rejections)),
    )


def chunk_payload(cur: psycopg.Cursor[Any], *, job_id: str, chunk_no: int) -> tuple[int, bytes]:
    """A stored chunk's first index and payload."""
    cur.execute("SELECT first_index, payload FROM job_chunks WHERE job_id = %s AND chunk_no = %s", (job_id, chunk_no))
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


def add_rejections(cur: psycopg.Cursor[Any], *, job_id: str, by_chunk: Mapping[int, dict[str, Any]]) -> None:
    """Add errors to records of stored chunks; a record rejected already keeps its errors, the new ones after."""
    cur.executemany(
        "UPDATE job_chunks SET rejections = coalesce(rejections, '{}'::jsonb) || "
        "  (SELECT jsonb_object_agg(k, coalesce(rejections -> k, '[]'::jsonb) || v) "
        "   FROM jsonb_each(%s::jsonb) AS found(k, v)) "
        "WHERE job_id = %s AND chunk_no = %s",
        [(_json(found), job_id, number) for number, found in by_chunk.items()],
    )


def try_lock_chunk(session: Session, *, job_id: str, chunk_no: int) -> bool:
    """Hold the chunk for this transaction, unless another does."""
    return bool(
        session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:j || ':' || :c, 13))"),
            {"j": job_id, "c": str(chunk_no)},
        ).scalar_one()
    )


def chunk_state(session: Session, *, job_id: str, chunk_no: int) -> str | None:
    """A chunk's state as last committed (None if the job has no such chunk)."""
    state: str | None = session.execute(
        text("SELECT state FROM job_chunks WHERE job_id = :j AND chunk_no = :c"), {"j": job_id, "c": chunk_no}
    ).scalar_one_or_none()
    return state


def give_back_attempt(session: Session, *, job_id: str, chunk_no: int) -> None:
    """Uncount an attempt at a queued chunk that was given up before anything was done with it."""
    session.execute(
        text(
            "UPDATE job_chunks SET attempts = greatest(attempts - 1, 0) "
            f"WHERE job_id = :j AND chunk_no = :c AND state = '{_QUEUED}'"
        ),
        {"j": job_id, "c": chunk_no},
    )


def count_attempt(session: Session, *, job_id: str, chunk_no: int, lease_seconds: int) -> int | None:
    """One more attempt at a queued chunk, its lease extended; None if it is no longer queued."""
    attempts: int | None = session.execute(
        text(
            "UPDATE job_chunks SET attempts = attempts + 1, "
            "lease_until = now() + make_interval(secs => :lease) "
            f"WHERE job_id = :j AND chunk_no = :c AND state = '{_QUEUED}' RETURNING attempts"
        ),
        {"j": job_id, "c": chunk_no, "lease": lease_seconds},
    ).scalar_one_or_none()
    return attempts


def chunk_to_apply(session: Session, *, job_id: str, chunk_no: int) -> Row[Any]:
    """(first_index, payload, rejections) of a chunk."""
    return session.execute(
        text("SELECT first_index, payload, rejections FROM job_chunks WHERE job_id = :j AND chunk_no = :c"),
        {"j": job_id, "c": chunk_no},
    ).one()


def open_chunk(session: Session, *, job_id: str, chunk_no: int) -> Row[Any] | None:
    """(first_index, record_count, rejections, attempts) of a chunk not done yet, or None."""
    return session.execute(
        text(
            "SELECT first_index, record_count, rejections, attempts FROM job_chunks "
            f"WHERE job_id = :j AND chunk_no = :c AND state <> '{_DONE}'"
        ),
        {"j": job_id, "c": chunk_no},
    ).one_or_none()


def open_chunk_numbers(session: Session, *, job_id: str) -> list[int]:
    return list(
        session.execute(
            text(f"SELECT chunk_no FROM job_chunks WHERE job_id = :j AND state <> '{_DONE}' ORDER BY chunk_no"),
            {"j": job_id},
        ).scalars()
    )


def finish_chunk(
    session: Session,
    *,
    job_id: str,
    chunk_no: int,
    results: Sequence[dict[str, Any]],
    counts: Mapping[str, int],
    error_counts: Mapping[str, int],
    duration_ms: int | None,
) -> None:
    """Store a chunk's results, outcome counts and error counts by code: it is done."""
    session.execute(
        text(
            f"UPDATE job_chunks SET state = '{_DONE}', results = :r, outcome_counts = CAST(:oc AS jsonb), "
            "error_counts = CAST(:ec AS jsonb), processed_at = now(), lease_until = NULL, duration_ms = :d "
            "WHERE job_id = :j AND chunk_no = :c"
        ),
        {
            "r": orjson.dumps(list(results)),
            "oc": _json(dict(counts)),
            "ec": _json(dict(error_counts)),
            "d": duration_ms,
            "j": job_id,
            "c": chunk_no,
        },
    )


# --- dry runs ---------------------------------------------------------------------------------------------------


def dry_run_rows(session: Session, *, job_id: str, row_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The would-be state of those rows that the dry run's processed chunks would have replaced, by row id.

    Each id is looked up through the primary key on its own (OFFSET 0 keeps the lookups apart): the table grows by
    a chunk's rows at a time, faster than statistics follow, and `row_id = ANY(…)` could be read as a filter over
    every row the job wrote so far, a chunk at a time: quadratic in the job's size.
    """
    cur = driver_connection(session).execute(
        "SELECT d.row_id, d.state::text FROM unnest(%s::text[]) AS k(id) "
        "CROSS JOIN LATERAL (SELECT row_id, state FROM dry_run_rows WHERE job_id = %s AND row_id = k.id OFFSET 0) AS d",
        (text_array(list(row_ids)), job_id),
        prepare=False,  # as core.records.repository.load_rows, for the same reason
    )
    return {row_id: orjson.loads(state) for row_id, state in cur.fetchall()}


def save_dry_run_rows(session: Session, *, job_id: str, states: Mapping[str, dict[str, Any]]) -> None:
    """Record the would-be state of rows a dry-run chunk would replace (a later one replacing a row again wins)."""
    if not states:
        return
    driver_connection(session).execute(
        "INSERT INTO dry_run_rows (job_id, row_id, state) SELECT %s, r ->> 0, r -> 1 "
        "FROM jsonb_array_elements(%s::jsonb) AS r "
        "ON CONFLICT (job_id, row_id) DO UPDATE SET state = EXCLUDED.state",
        (job_id, orjson.dumps(list(states.items())).decode()),
    )


def forget_dry_run_rows(session: Session, *, job_id: str) -> None:
    """A finished dry run needs its would-be rows no more."""
    driver_connection(session).execute("DELETE FROM dry_run_rows WHERE job_id = %s", (job_id,))


# --- results ----------------------------------------------------------------------------------------------------


def done_chunks_after(
    session: Session, *, job_id: str, after: int, outcome: str | None, containing: bytes | None = None
) -> list[int]:
    """The done chunks holding results with an index past `after` (and, if given, that outcome, and results whose
    stored bytes hold `containing`), in order."""
    query = (
        f"SELECT chunk_no FROM job_chunks WHERE job_id = :j AND state = '{_DONE}' "
        "AND first_index + record_count > :after + 1"
    )
    if outcome is not None:
        query += " AND coalesce((outcome_counts ->> :o)::int, 0) > 0"
    if containing is not None:
        query += " AND position(CAST(:needle AS bytea) IN results) > 0"
    return list(
        session.execute(
            text(query + " ORDER BY chunk_no"), {"j": job_id, "after": after, "o": outcome, "needle": containing}
        ).scalars()
    )


def chunk_results(session: Session, *, job_id: str, chunk_no: int) -> bytes:
    """A done chunk's results, as stored (a JSON array)."""
    blob: bytes = session.execute(
        text("SELECT results FROM job_chunks WHERE job_id = :j AND chunk_no = :c"), {"j": job_id, "c": chunk_no}
    ).scalar_one()
    return blob
