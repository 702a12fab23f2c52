"""Jobs: status, lists, per-record results (paged or streamed as NDJSON), cancel."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.deps import DbSession, PartnerId
from api.idempotency import idempotent
from api.openapi import ndjson_answer, ok
from api.responses import json_response
from api.schemas import ref
from core.db import after_commit, commit, session_scope
from core.jobs import processing, results
from core.jobs import service as jobs
from core.jobs.schemas import job_view
from core.jobs.status import JobStatus
from core.records.rules import Kind, Outcome
from workers.publish import publish_chunks

router = APIRouter(tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=1000)]
# A result's index as a string, like every cursor (`next_cursor`); only digits (or -1, before the first) are valid.
ResultCursor = Annotated[
    str | None,
    Query(
        pattern=r"^(-1|[0-9]{1,18})$",
        description="Return results after this index: a page's `next_cursor` (a string of digits)",
    ),
]


@router.get("/jobs/{job_id}", summary="A job's status and counts", responses={200: ok("Job")})
def get_job(session: DbSession, partner_id: PartnerId, job_id: str) -> Response:
    view = job_view(jobs.get_job(session, partner_id=partner_id, job_id=job_id))
    commit(session)  # ends the read here, in the route's thread, not after another thread switch
    return json_response(view)


@router.get("/jobs", summary="The partner's jobs, newest first", responses={200: ok("JobList")})
def list_jobs(
    session: DbSession,
    partner_id: PartnerId,
    status: JobStatus | None = None,
    type: Kind | None = None,  # noqa: A002
    limit: Limit = 100,
    starting_after: Annotated[str | None, Query(pattern=r"^[^\x00]*$", description="Return jobs after this id")] = None,
) -> Response:
    rows, has_more = jobs.list_jobs(
        session, partner_id=partner_id, status=status, kind=type, limit=limit, starting_after=starting_after
    )
    data = [job_view(j) for j in rows]
    return json_response(
        {"object": "list", "data": data, "has_more": has_more, "next_cursor": data[-1]["id"] if has_more else None}
    )


@router.get(
    "/jobs/{job_id}/results",
    summary="Per-record results in input order",
    responses={
        200: {
            "description": "A page, or every result as NDJSON (`Accept: application/x-ndjson`)",
            "content": {
                "application/json": {"schema": ref("ResultList")},
                **ndjson_answer("Every (filtered) `Result` object, one per line"),
            },
        }
    },
)
def job_results(
    request: Request,
    session: DbSession,
    partner_id: PartnerId,
    job_id: str,
    outcome: Outcome | None = None,
    limit: Limit = 100,
    starting_after: ResultCursor = None,
) -> Response:
    """Results of the records processed so far. `Accept: application/x-ndjson` streams every one."""
    job = jobs.get_job(session, partner_id=partner_id, job_id=job_id)
    after = -1 if starting_after is None else int(starting_after)
    if "application/x-ndjson" in request.headers.get("accept", ""):
        lines = _ndjson_results(job.id, outcome=outcome, after=after)
        # The first lines are read before the answer starts, so a database that fails right now is a 503 problem,
        # not a 200 cut short.
        first = next(lines, b"")
        return StreamingResponse(itertools.chain([first], lines), media_type="application/x-ndjson")
    page, has_more = results.results_page(session, job.id, outcome=outcome, starting_after=after, limit=limit)
    return json_response(
        {
            "object": "list",
            "data": page,
            "has_more": has_more,
            "next_cursor": str(page[-1]["index"]) if has_more else None,
        }
    )


def _ndjson_results(job_id: str, *, outcome: str | None, after: int) -> Iterator[bytes]:
    # The stream's own session: it outlives the route's, until the last line is sent.
    with session_scope() as session:
        yield from results.results_ndjson(session, job_id, outcome=outcome, after=after)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job",
    responses={200: ok("Job"), 409: {"description": "`job_finished`: the job is already finished"}},
)
def cancel_job(request: Request, session: DbSession, partner_id: PartnerId, job_id: str) -> Response:
    """Records not yet processed end `cancelled`; processed ones stay. A finished job answers 409."""

    def handle() -> Response:
        job, to_publish = processing.cancel_job(session, partner_id=partner_id, job_id=job_id)

        def publish() -> None:
            # The partner's next waiting job may have been admitted by this cancel: its chunks go out after commit.
            publish_chunks(to_publish)

        after_commit(session, publish)
        return json_response(job_view(job))

    return idempotent(request, session, partner_id, b"", handle)
