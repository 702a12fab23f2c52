"""Processing one chunk of a job: claim it, apply its records, record every outcome and move the counters.

A chunk is processed in one transaction that holds an advisory lock on it for its whole length. The attempt is
counted first, in its own committed transaction, so a worker killed mid-chunk leaves the count behind: a chunk
that keeps killing its worker ends, after PFSYNC_MAX_CHUNK_ATTEMPTS, with its records `failed` (internal_error).
Results and counters are written in the same transaction as the records they describe.

A dry run's chunk (SPEC §9) goes through the same steps and the same rules, but its records are previewed, not
applied: their rows are read without a lock and nothing is written to businesses or customers. Each record must see
what the records before it would have done, across chunks too, so a dry run's chunks are planned in input order:
two are processed at once as for any job, but a chunk, once its records are validated and its rows read, waits for
the chunk before it to be done, then plans over its rows and what the chunks before it would have made of them
(`dry_run_rows`, written in the same transaction as the results that describe them, for the rows a later record
can still name). A chunk whose predecessor no worker holds (one worker process, a message redelivered out of
order) gives its attempt back and leaves: the predecessor, once done, publishes it again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from sqlalchemy.orm import Session

from core import logs
from core.config import settings
from core.errors import DomainError, FieldError, bounded_errors
from core.jobs import repository
from core.jobs.admission import ChunkKey, admit_jobs, release_window
from core.jobs.results import error_counts
from core.jobs.schemas import FINISHED
from core.jobs.service import get_job
from core.jobs.status import ChunkState
from core.models import SyncJob
from core.partners.repository import hold_key_for_job
from core.records.repository import apply_isolating, read_rows
from core.records.rules import (
    CANCELLED,
    CREATED,
    FAILED,
    REPLACED,
    SUPERSEDED,
    UNCHANGED,
    NamedKeys,
    Payload,
    RecordOutcome,
    Row,
    Scope,
    preview,
)
from core.records.schemas import WRITABLE, parse_record
from core.webhooks.service import enqueue_job_finished

log = logging.getLogger(__name__)

# Test hook, off unless set (never set it in production): a worker process that meets a chunk holding a record
# with this external_id exits on the spot, after counting its attempt, as if SIGKILLed mid-chunk. The fault tests
# use it to make a chunk that keeps killing its worker (tests/e2e/test_faults.py).
_CRASH_ON_EXTERNAL_ID = os.environ.get("PFSYNC_TEST_CRASH_ON_EXTERNAL_ID") or None


def _test_crash_hook(records: list[tuple[int, Payload | list[FieldError]]]) -> None:
    if _CRASH_ON_EXTERNAL_ID and any(getattr(p, "external_id", None) == _CRASH_ON_EXTERNAL_ID for _, p in records):
        os._exit(70)


class NotItsTurn(Exception):
    """A dry-run chunk whose predecessor is neither done nor held by a worker: it cannot be planned yet."""


@dataclass(slots=True)
class ChunkDone:
    """What a processed chunk leads to: more chunks to publish, and the job if it just finished."""

    to_publish: list[ChunkKey] = field(default_factory=list)
    finished_job: str | None = None
    outcomes: Counter[str] = field(default_factory=Counter)


def count_attempt(session: Session, *, job_id: str, chunk_no: int) -> int | None:
    """Count an attempt at a chunk and extend its lease (its job is running from now); None if the chunk is no
    longer queued (done already). The caller commits it at once, in a transaction of its own: a worker killed
    mid-chunk leaves the count behind."""
    attempts = repository.count_attempt(session, job_id=job_id, chunk_no=chunk_no, lease_seconds=settings.lease_seconds)
    if attempts is not None:
        repository.mark_running(session, job_id=job_id)
    return attempts


def _decode(
    kind: str, first_index: int, payload: bytes, rejections: dict[str, list[dict[str, str | None]]] | None
) -> tuple[list[tuple[int, Payload | list[FieldError]]], dict[int, str]]:
    """The chunk's records, validated, and the external_ids of those that failed before planning.

    A record rejected at acceptance only for repeating another's key (`duplicate_in_batch`) is validated too, and
    reports its validation errors first, then the duplicates (SPEC §7: every error that applies). One rejected for
    what it is (not an object, not JSON, not storable) keeps the errors found then. Every list is bounded.
    """
    records: list[tuple[int, Payload | list[FieldError]]] = []
    labels: dict[int, str] = {}
    rejected = rejections or {}
    for offset, element in enumerate(orjson.loads(payload)):
        index = first_index + offset
        stored = rejected.get(str(offset)) if rejected else None
        parsed: Payload | list[FieldError]
        if stored is None:
            parsed = parse_record(kind, element)
        else:
            errors = [FieldError(**e) for e in stored]  # type: ignore[arg-type]
            if errors and isinstance(element, dict) and all(e.code == "duplicate_in_batch" for e in errors):
                checked = parse_record(kind, element)
                errors = (checked if isinstance(checked, list) else []) + errors
            parsed = bounded_errors(errors)
        if isinstance(parsed, list) and isinstance(element, dict):
            xid = element.get("external_id")
            if isinstance(xid, str):
                labels[index] = xid
        records.append((index, parsed))
    return records, labels


# Jobs some of whose records this process found stored (their keys held by stored rows), the most recent last:
# their later chunks read the rows before writing (`_likely_new`). Bounded, the oldest forgotten first.
_FOUND_STORED: OrderedDict[str, None] = OrderedDict()
_FOUND_STORED_LIMIT = 1024
# The outcomes and errors that only a record whose key a stored row holds can have.
_STORED_OUTCOMES = frozenset((REPLACED, UNCHANGED, SUPERSEDED))
_STORED_ERRORS = frozenset(("email_address_taken", "external_id_conflict"))


def _likely_new(job: SyncJob) -> bool:
    """Whether a chunk's records are likely all new (`apply_records`' `assume_new`): no record of its job so far
    found a stored one (an initial load), by the job's counters or, for failures, by what this process saw."""
    return not (job.replaced or job.unchanged or job.superseded) and job.id not in _FOUND_STORED


def _found_stored(outcomes: list[RecordOutcome]) -> bool:
    return any(
        o.outcome in _STORED_OUTCOMES or any(e.code in _STORED_ERRORS for e in o.errors)
        for o in outcomes
        if o.outcome != CREATED
    )


def _remember_found_stored(job_id: str) -> None:
    _FOUND_STORED[job_id] = None
    _FOUND_STORED.move_to_end(job_id)
    while len(_FOUND_STORED) > _FOUND_STORED_LIMIT:
        _FOUND_STORED.popitem(last=False)


def _finish(
    session: Session,
    job: SyncJob,
    chunk_no: int,
    outcomes: list[RecordOutcome],
    abandoned: bool,
    duration_ms: int | None = None,
) -> ChunkDone:
    counts = Counter(o.outcome for o in outcomes)
    results = [o.as_result() for o in outcomes]
    repository.finish_chunk(
        session,
        job_id=job.id,
        chunk_no=chunk_no,
        results=results,
        counts=counts,
        error_counts=error_counts(results),
        duration_ms=duration_ms,
    )
    row = repository.add_outcomes(session, job_id=job.id, counts=counts, abandoned=abandoned)
    done = ChunkDone(outcomes=counts)
    if row.finished:
        done.finished_job = job.id
        if job.dry_run:
            repository.forget_dry_run_rows(session, job_id=job.id)
        # The webhook's outbox row commits with the job's end, or not at all.
        enqueue_job_finished(session, job_id=job.id)
        done.to_publish = admit_jobs(session, job.partner_id)
    elif not row.cancel:
        done.to_publish = release_window(session, job.id, 1)
        if job.dry_run:
            done.to_publish += _waiting_successor(session, job, chunk_no)
    return done


def _waiting_successor(session: Session, job: SyncJob, chunk_no: int) -> list[ChunkKey]:
    """A dry run's next chunk, if it is queued and no worker holds it: it may have given up waiting for this one
    (`NotItsTurn`), so it is published again. Held here until this transaction ends, it cannot be taken meanwhile;
    a message for it still in the queue makes a duplicate, which finds it held or done."""
    successor = chunk_no + 1
    if successor >= job.chunk_count:
        return []
    if repository.chunk_state(session, job_id=job.id, chunk_no=successor) != ChunkState.QUEUED:
        return []
    if not repository.try_lock_chunk(session, job_id=job.id, chunk_no=successor):
        return []
    return [(job.id, successor)]


def give_back(session: Session, *, job_id: str, chunk_no: int) -> None:
    """Uncount the attempt of a chunk that left before doing anything (`NotItsTurn`), so waiting never counts
    towards PFSYNC_MAX_CHUNK_ATTEMPTS."""
    repository.give_back_attempt(session, job_id=job_id, chunk_no=chunk_no)


def settle_chunk(session: Session, *, job_id: str, chunk_no: int, reason: str) -> ChunkDone | None:
    """End a chunk without applying it: `cancelled`, or `abandoned` (its records fail with internal_error).

    Records rejected at acceptance keep their own errors. None if a worker holds the chunk right now.
    """
    if not repository.try_lock_chunk(session, job_id=job_id, chunk_no=chunk_no):
        return None
    chunk = repository.open_chunk(session, job_id=job_id, chunk_no=chunk_no)
    if chunk is None:
        return None
    job = session.get(SyncJob, job_id)
    assert job is not None
    rejected = chunk.rejections or {}
    outcomes: list[RecordOutcome] = []
    for offset in range(chunk.record_count):
        index = chunk.first_index + offset
        if str(offset) in rejected:
            errors = bounded_errors(FieldError(**e) for e in rejected[str(offset)])
            outcomes.append(RecordOutcome(index, FAILED, errors=errors))
        elif reason == "cancelled":
            outcomes.append(RecordOutcome(index, CANCELLED))
        else:
            message = f"processing failed {chunk.attempts - 1} times; the record was not applied"
            outcomes.append(RecordOutcome(index, FAILED, errors=[FieldError("internal_error", message, None)]))
    return _finish(session, job, chunk_no, outcomes, abandoned=reason == "abandoned")


def process_chunk(session: Session, *, job_id: str, chunk_no: int, claim: Callable[[], int | None]) -> ChunkDone | None:
    """Apply one chunk in the session's transaction, which holds the chunk's lock until it ends. `claim` counts the
    attempt in a transaction of its own (`count_attempt`). None when there was nothing to do (done already, or
    held by a live worker)."""
    started = time.perf_counter()
    if not repository.try_lock_chunk(session, job_id=job_id, chunk_no=chunk_no):
        log.info("chunk %s/%d held by another worker", job_id, chunk_no)
        return None
    attempts = claim()
    if attempts is None:
        return None
    # Read afresh: its counters (and a cancel) may have moved since this session last saw it.
    job = session.get(SyncJob, job_id, populate_existing=True)
    assert job is not None
    if job.api_key_id is not None and not job.dry_run and not hold_key_for_job(session, key_id=job.api_key_id):
        # Revoked (`cancel_jobs_of_key` cancelled the job as it did). Held live, the key's revocation waits for
        # this chunk's transaction: no chunk of a job is applied once its key's revocation has returned.
        repository.request_cancel(session, job_id=job_id)
        session.refresh(job)
    # From here the worker's log lines also name the partner and the request that submitted the job.
    with logs.bound(partner_id=job.partner_id, request_id=job.request_id):
        if attempts > settings.max_chunk_attempts:
            log.error("chunk %s/%d abandoned after %d attempts", job_id, chunk_no, attempts - 1)
            return settle_chunk(session, job_id=job_id, chunk_no=chunk_no, reason="abandoned")
        if job.cancel_requested_at is not None:
            return settle_chunk(session, job_id=job_id, chunk_no=chunk_no, reason="cancelled")
        chunk = repository.chunk_to_apply(session, job_id=job_id, chunk_no=chunk_no)
        records, labels = _decode(job.type, chunk.first_index, bytes(chunk.payload), chunk.rejections)
        _test_crash_hook(records)
        scope = Scope(job.type, job.partner_id, job.business_id)  # type: ignore[arg-type]
        if job.dry_run:
            outcomes = _preview_chunk(session, job, chunk_no, scope, records)
        else:
            assert job.seq is not None
            assume_new = _likely_new(job)
            outcomes = apply_isolating(session, scope=scope, seq=job.seq, records=records, assume_new=assume_new)
            if assume_new and _found_stored(outcomes):
                _remember_found_stored(job.id)
        for outcome in outcomes:
            if outcome.external_id is None and outcome.index in labels:
                outcome.external_id = labels[outcome.index]
        duration_ms = round((time.perf_counter() - started) * 1000)
        done = _finish(session, job, chunk_no, outcomes, abandoned=False, duration_ms=duration_ms)
        log.info(
            "chunk processed",
            extra={"chunk_no": chunk_no, "records": len(outcomes), "duration_ms": duration_ms}
            | {f"outcome_{name}": count for name, count in done.outcomes.items()},
        )
        return done


def _preview_chunk(
    session: Session, job: SyncJob, chunk_no: int, scope: Scope, records: list[tuple[int, Payload | list[FieldError]]]
) -> list[RecordOutcome]:
    """A dry run of one chunk: every record's would-be outcome, seeing what the job's earlier chunks would have
    done. The rows are read first, then the chunk waits for its turn (`_wait_turn`) and is planned; the rows it would
    replace that a later record can still name are recorded for the chunks after it."""
    rows = read_rows(session, scope=scope, records=records)
    _wait_turn(session, job, chunk_no)
    session.refresh(job, ["replaced"])  # the chunks before this one are done now
    carried: dict[str, Row] = {}
    if job.replaced and rows:  # only a replaced record leaves a would-be row
        carried = repository.dry_run_rows(session, job_id=job.id, row_ids=[row["id"] for row in rows])
        for row in rows:
            state = carried.get(row["id"])
            if state is not None:
                row.update(state)
    outcome = preview(scope=scope, records=records, rows=rows)
    if chunk_no < job.chunk_count - 1 and outcome.replaced:
        named = NamedKeys.of(records)
        before = {row["id"]: row for row in rows}
        columns = WRITABLE[scope.kind]
        states = {
            row["id"]: {c: row[c] for c in columns}
            for row in outcome.replaced
            # A row carried already is carried on, or the chunks after this one would see a stale state of it.
            if row["id"] in carried or named.leave_reachable(before[row["id"]], ids_in_batch=job.names_ids)
        }
        repository.save_dry_run_rows(session, job_id=job.id, states=states)
    return outcome.outcomes


# How often a dry-run chunk looks whether the chunk before it is done, and how long it waits for it in all.
_TURN_POLL_SECONDS = (0.002, 0.05)


def _wait_turn(session: Session, job: SyncJob, chunk_no: int) -> None:
    """Return once the chunk before this one is done (its results, counters and would-be rows committed); raise
    `NotItsTurn` if no worker is at it, or if it is not done within PFSYNC_LEASE_SECONDS."""
    if chunk_no == 0:
        return
    deadline = time.monotonic() + settings.lease_seconds
    delay = _TURN_POLL_SECONDS[0]
    while True:
        if repository.chunk_state(session, job_id=job.id, chunk_no=chunk_no - 1) == ChunkState.DONE:
            return
        if repository.try_lock_chunk(session, job_id=job.id, chunk_no=chunk_no - 1):
            # Nobody works on it: it may wait in the queue behind this very chunk. (Done just now, it is free too.)
            if repository.chunk_state(session, job_id=job.id, chunk_no=chunk_no - 1) == ChunkState.DONE:
                return
            raise NotItsTurn(f"chunk {chunk_no - 1} of {job.id} is not being processed")
        if time.monotonic() > deadline:
            raise NotItsTurn(f"chunk {chunk_no - 1} of {job.id} is taking too long")
        time.sleep(delay)
        delay = min(delay * 2, _TURN_POLL_SECONDS[1])


def cancel_job(session: Session, *, partner_id: str, job_id: str) -> tuple[SyncJob, list[ChunkKey]]:
    """Cancel a job: every chunk no worker holds ends `cancelled` now; chunks being processed finish.

    Also returns the chunks to publish once the transaction commits: a job that ends here frees its partner's
    slot, and the next waiting job is admitted at once.
    """
    job = get_job(session, partner_id=partner_id, job_id=job_id, for_update=True)
    if job.status in FINISHED:
        raise DomainError("job_finished", f"The job is already {job.status}; there is nothing to cancel.", 409)
    repository.request_cancel(session, job_id=job.id)
    to_publish: list[ChunkKey] = []
    for chunk_no in repository.open_chunk_numbers(session, job_id=job.id):
        done = settle_chunk(session, job_id=job.id, chunk_no=chunk_no, reason="cancelled")
        if done is not None:
            to_publish += done.to_publish
    session.expire(job)
    return get_job(session, partner_id=partner_id, job_id=job_id), to_publish


def cancel_jobs_of_key(session: Session, *, key_id: str) -> list[ChunkKey]:
    """Cancel every unfinished job a key submitted (`cancel_job`), in the transaction that revokes it: SPEC §8, no
    write made with a key is applied once its revocation has returned, a batch's included. Chunks being processed
    now hold the key (`process_chunk`), so the revocation waits for them; every later one finds its job cancelled.
    Returns the chunks to publish once the transaction commits (jobs of the partner admitted in their place)."""
    to_publish: list[ChunkKey] = []
    for job_id, partner_id in repository.unfinished_jobs_of_key(session, key_id=key_id):
        try:
            _, published = cancel_job(session, partner_id=partner_id, job_id=job_id)
        except DomainError as exc:
            if exc.code != "job_finished":  # it ended meanwhile
                raise
            continue
        to_publish += published
    return to_publish
