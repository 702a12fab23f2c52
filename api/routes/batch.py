"""Batch sync: store every record durably, answer 202 with a job, let the workers apply them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.deps import JSON_TYPES, NDJSON_TYPES, BodyStream, DbSession, PartnerId, media_type
from api.idempotency import idempotent
from api.openapi import BUSINESS, BUSINESS_SYNC, CUSTOMER, CUSTOMER_SYNC, JOB, batch_answer, batch_of, ok, request_body
from api.responses import json_response
from core import batch, logs
from core.config import settings
from core.db import session_scope
from core.errors import DomainError
from core.jobs import accept_batch, get_job, job_view
from core.resources import require_business
from core.results import compat_body
from core.webhooks import resolve_callback_url
from workers.publish import publish_chunks

log = logging.getLogger(__name__)
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


CallbackUrl = Annotated[
    str | None,
    Query(
        max_length=2048,
        description="Notify this URL instead of your webhook when the job finishes; it must be on the origin "
        "(scheme, host and port) of your webhook URL.",
    ),
]


def _wait_seconds(request: Request) -> int:
    match = _WAIT.search(request.headers.get("prefer", ""))
    return min(int(match.group(1)), settings.max_wait_seconds) if match else 0


def _accept(
    request: Request,
    session: DbSession,
    partner_id: str,
    kind: str,
    business_id: str | None,
    callback_url: str | None = None,
) -> Response:
    fmt = batch_format(request)
    body = BodyStream(request, settings.max_body_bytes)
    to_publish: list[tuple[str, int]] = []

    def handle() -> Response:
        webhook_url = resolve_callback_url(session, partner_id=partner_id, callback_url=callback_url)
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
                webhook_url=webhook_url,
            )
        to_publish.extend(accepted.to_publish)
        job = accepted.job
        log.info("job accepted", extra={"job_id": job.id, "records": job.total, "chunks": job.chunk_count})
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


@router.post(
    "/sync/businesses/batch",
    status_code=202,
    responses={
        **BATCH_RESPONSES,
        200: ok(batch_answer("businesses", BUSINESS), BATCH_RESPONSES[200]["description"]),  # type: ignore[arg-type]
        202: ok(JOB, BATCH_RESPONSES[202]["description"]),  # type: ignore[arg-type]
    },
    openapi_extra=request_body(batch_of("businesses", BUSINESS_SYNC), ndjson=True),
    summary="Sync many businesses",
)
def sync_businesses_batch(
    request: Request, session: DbSession, partner_id: PartnerId, callback_url: CallbackUrl = None
) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS businesses as `{"businesses": [...]}` or NDJSON; answer with a job."""
    return _accept(request, session, partner_id, "businesses", None, callback_url)


@router.post(
    "/sync/businesses/{business_id}/customers/batch",
    status_code=202,
    responses={
        **BATCH_RESPONSES,
        200: ok(batch_answer("customers", CUSTOMER), BATCH_RESPONSES[200]["description"]),  # type: ignore[arg-type]
        202: ok(JOB, BATCH_RESPONSES[202]["description"]),  # type: ignore[arg-type]
    },
    openapi_extra=request_body(batch_of("customers", CUSTOMER_SYNC), ndjson=True),
    summary="Sync many customers of a business",
)
def sync_customers_batch(
    request: Request, session: DbSession, partner_id: PartnerId, business_id: str, callback_url: CallbackUrl = None
) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS customers as `{"customers": [...]}` or NDJSON; answer with a job."""
    require_business(session, partner_id=partner_id, business_id=business_id)
    return _accept(request, session, partner_id, "customers", business_id, callback_url)
