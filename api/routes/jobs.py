"""Jobs: status, lists, per-record results (paged, or streamed as NDJSON or CSV), cancel."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.deps import DbSession, PartnerId, check_dry_run
from api.idempotency import idempotent
from api.openapi import csv_answer, ndjson_answer, ok
from api.responses import json_response
from api.schemas import ref
from core.db import after_commit, commit, session_scope
from core.jobs import processing, results
from core.jobs import service as jobs
from core.jobs.schemas import job_view
from core.jobs.status import JobStatus
from core.records.rules import Kind, Outcome
from workers.publish import publish_chunks

router = APIRouter(tags=["jobs"], dependencies=[Depends(check_dry_run)])
NDJSON = "application/x-ndjson"
CSV = "text/csv"

Limit = Annotated[int, Query(ge=1, le=1000)]
# A result's index as a string, like every cursor (`next_cursor`); only digits (or -1, before the first) are valid.
ResultCursor = Annotated[
    str | None,
    Query(
        pattern=r"^(-1|[0-9]{1,18})$",
        description="Return results after this index: a page's `next_cursor` (a string of digits)",
    ),
]


@router.get(
    "/jobs/{job_id}",
    summary="A job's status and counts",
    responses={
        200: ok(
            "Job", "The job; while it is unfinished, `Retry-After` says when to ask again", headers=("Retry-After",)
        )
    },
)
def get_job(session: DbSession, partner_id: PartnerId, job_id: str) -> Response:
    """While the job is unfinished, `Retry-After` is about the time its remaining records should take (1 to 60 s)."""
    job = jobs.get_job(session, partner_id=partner_id, job_id=job_id)
    view = job_view(job)
    commit(session)  # ends the read here, in the route's thread, not after another thread switch
    wait = jobs.retry_after_seconds(job, datetime.now(UTC))
    return json_response(view, headers=None if wait is None else {"Retry-After": str(wait)})


@router.get("/jobs", summary="The partner's jobs, newest first", responses={200: ok("JobList")})
def list_jobs(
    session: DbSession,
    partner_id: PartnerId,
    status: JobStatus | None = None,
    type: Kind | None = None,  # noqa: A002
    dry_run: Annotated[
        bool | None, Query(description="Only dry runs (`true`) or only real jobs (`false`); both when absent")
    ] = None,
    limit: Limit = 100,
    starting_after: Annotated[str | None, Query(pattern=r"^[^\x00]*$", description="Return jobs after this id")] = None,
) -> Response:
    rows, has_more = jobs.list_jobs(
        session,
        partner_id=partner_id,
        status=status,
        kind=type,
        dry_run=dry_run,
        limit=limit,
        starting_after=starting_after,
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
            "description": "A page, or every result as NDJSON (`Accept: application/x-ndjson`) or CSV "
            "(`Accept: text/csv`)",
            "content": {
                "application/json": {"schema": ref("ResultList")},
                **ndjson_answer("Every (filtered) `Result` object, one per line"),
                **csv_answer(
                    "Every (filtered) result as CSV (RFC 4180, UTF-8, no BOM): the header row "
                    f"`{','.join(results.CSV_HEADER)}`, then a row per result; null is an empty cell, and a list "
                    "(`changed_fields`, and the `code`, `path` and `message` of each error) is one cell, its "
                    "elements joined with `;`. Values are exactly those of the JSON results."
                ),
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
    external_id: Annotated[
        str | None,
        Query(max_length=255, pattern=r"^[^\x00]*$", description="Only the results of records with this external_id"),
    ] = None,
    limit: Limit = 100,
    starting_after: ResultCursor = None,
) -> Response:
    """Results of the records processed so far. `Accept: application/x-ndjson` or `text/csv` streams every one."""
    job = jobs.get_job(session, partner_id=partner_id, job_id=job_id)
    after = -1 if starting_after is None else int(starting_after)
    streamed = _streamed_format(request.headers.get("accept", ""))
    if streamed is not None:
        render = results.results_ndjson if streamed == NDJSON else results.results_csv
        parts = _streamed_results(render, job.id, outcome=outcome, external_id=external_id, after=after)
        # The first part is read before the answer starts, so a database that fails right now is a 503 problem,
        # not a 200 cut short.
        first = next(parts, b"")
        if streamed == NDJSON:
            return StreamingResponse(itertools.chain([first], parts), media_type=NDJSON)
        return StreamingResponse(
            itertools.chain([first], parts),
            media_type="text/csv; charset=utf-8; header=present",
            headers={"Content-Disposition": f'attachment; filename="{job.id}-results.csv"'},
        )
    page, has_more = results.results_page(
        session, job.id, outcome=outcome, external_id=external_id, starting_after=after, limit=limit
    )
    return json_response(
        {
            "object": "list",
            "data": page,
            "has_more": has_more,
            "next_cursor": str(page[-1]["index"]) if has_more else None,
        }
    )


_OFFERED = ("application/json", NDJSON, CSV)


def _quality(media_range: str) -> tuple[str, float]:
    """A media range of an Accept header and its weight (`q`, 1 unless given; 0 for a weight that is not one)."""
    media, *params = (part.strip() for part in media_range.split(";"))
    weight = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = min(max(float(value), 0.0), 1.0)
            except ValueError:
                weight = 0.0
    return media.lower(), weight


def _streamed_format(accept: str) -> str | None:
    """NDJSON or CSV if the Accept header prefers one of them to JSON, else None: JSON pages (RFC 9110 §12.5.1:
    each format takes the weight of the most specific range naming it; the highest weight wins, the one named first
    among equals; `q=0` is "not this")."""
    ranges = [_quality(media_range) for media_range in accept.split(",") if media_range.strip()]
    best: tuple[float, int, str] | None = None
    for offered in _OFFERED:
        # Most specific first: the exact type, then its kind (`text/*`), then anything.
        patterns = (offered, offered.split("/", 1)[0] + "/*", "*/*")
        named = [(patterns.index(media), position, weight) for position, (media, weight) in enumerate(ranges)
                 if media in patterns]  # fmt: skip
        if not named:
            continue
        _, position, weight = min(named)
        if weight > 0 and (best is None or (weight, -position) > (best[0], -best[1])):
            best = (weight, position, offered)
    return best[2] if best is not None and best[2] != "application/json" else None


def _streamed_results(
    render: Callable[..., Iterator[bytes]], job_id: str, *, outcome: str | None, external_id: str | None, after: int
) -> Iterator[bytes]:
    # The stream's own session: it outlives the route's, until the last part is sent.
    with session_scope() as session:
        yield from render(session, job_id, outcome=outcome, external_id=external_id, after=after)


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
