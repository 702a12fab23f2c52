"""Batch sync: store every record durably, answer 202 with a job, let the workers apply them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import JSON_TYPES, NDJSON_TYPES, BodyStream, DbSession, PartnerId, media_type
from api.idempotency import idempotent
from api.responses import json_response
from core import batch, logs
from core.config import settings
from core.db import session_scope
from core.errors import DomainError
from core.jobs import accept_batch, get_job, job_view
from core.resources import get_business
from core.results import compat_body
from workers.publish import publish_chunks

router = APIRouter(tags=["batch sync"])
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)
FINISHED = ("completed", "cancelled", "failed")


def batch_format(request: Request) -> str:
    """`json` or `ndjson`, from the Content-Type."""
    kind = media_type(request)
    if kind in NDJSON_TYPES:
        return "ndjson"
    if not kind or kind in JSON_TYPES or kind.endswith("+json"):
        return "json"
    raise DomainError("unsupported_media_type", "Send the batch as application/json or application/x-ndjson.", 415)


BATCH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "With `Prefer: wait=N`, the job finished in time: Pocketflows' synchronous shape"},
    202: {"description": "The job and every record are stored; poll `Location`"},
    400: {"description": "`malformed_body`"},
    404: {"description": "No such business"},
    413: {"description": "`too_many_records` or `body_too_large`"},
    415: {"description": "Unsupported media type"},
    422: {"description": "`invalid_envelope` or `empty_batch`"},
}


def _wait_seconds(request: Request) -> int:
    match = _WAIT.search(request.headers.get("prefer", ""))
    return min(int(match.group(1)), settings.max_wait_seconds) if match else 0


def _accept(request: Request, session: DbSession, partner_id: str, kind: str, business_id: str | None) -> Response:
    fmt = batch_format(request)
    body = BodyStream(request, settings.max_body_bytes)
    to_publish: list[tuple[str, int]] = []

    def handle() -> Response:
        # NDJSON is parsed and stored chunk by chunk as it arrives, so memory stays flat in the body's size;
        # a JSON document has to be parsed whole.
        elements: Iterable[Any] = (
            batch.ndjson_elements(body.parts())
            if fmt == "ndjson"
            else batch.json_elements(kind, b"".join(body.parts()))
        )
        with session.begin_nested():  # a refused batch leaves no partial job behind
            accepted = accept_batch(
                session,
                partner_id=partner_id,
                kind=kind,
                business_id=business_id,
                elements=elements,
                request_id=logs.request_id.get(),
            )
        to_publish.extend(accepted.to_publish)
        job = accepted.job
        retry_after = max(1, min(60, job.total // 20_000))
        return json_response(
            job_view(job), 202, headers={"Location": f"/jobs/{job.id}", "Retry-After": str(retry_after)}
        )

    response = idempotent(request, session, partner_id, body, handle)
    # The 202 promises durability: commit before answering, publish only after the commit.
    session.commit()
    publish_chunks(to_publish)
    wait = _wait_seconds(request)
    if wait and response.status_code == 202 and not response.headers.get("Idempotent-Replayed"):
        job_id = response.headers["Location"].rsplit("/", 1)[1]
        finished = _wait_for(partner_id, job_id, wait)
        if finished is not None:
            finished.headers["Preference-Applied"] = f"wait={wait}"
            return finished
    return response


def _wait_for(partner_id: str, job_id: str, seconds: int) -> Response | None:
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        with session_scope() as session:
            job = get_job(session, partner_id=partner_id, job_id=job_id)
            if job.status in FINISHED:
                body = compat_body(session, job)
                body["job"] = job_view(job)
                return json_response(body, 200)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        # Wait the whole N seconds: the last check comes at the deadline, not one backoff step before it.
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.5)


@router.post("/sync/businesses/batch", status_code=202, responses=BATCH_RESPONSES, summary="Sync many businesses")
def sync_businesses_batch(request: Request, session: DbSession, partner_id: PartnerId) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS businesses as `{"businesses": [...]}` or NDJSON; answer with a job."""
    return _accept(request, session, partner_id, "businesses", None)


@router.post(
    "/sync/businesses/{business_id}/customers/batch",
    status_code=202,
    responses=BATCH_RESPONSES,
    summary="Sync many customers of a business",
)
def sync_customers_batch(request: Request, session: DbSession, partner_id: PartnerId, business_id: str) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS customers as `{"customers": [...]}` or NDJSON; answer with a job."""
    get_business(session, partner_id=partner_id, business_id=business_id)
    return _accept(request, session, partner_id, "customers", business_id)
