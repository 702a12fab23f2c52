"""Batch sync: store every record durably, answer 202 with a job, let the workers apply them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.body import JSON_TYPES, NDJSON_TYPES, SpooledBody, batch_upload, media_type
from api.deps import PartnerId, check_dry_run
from api.idempotency import idempotent
from api.openapi import ok, request_body
from api.responses import json_response
from core import logs
from core.config import settings
from core.db import after_commit, session_scope
from core.errors import DomainError
from core.jobs.results import compat_body
from core.jobs.schemas import FINISHED, job_view
from core.jobs.service import accept_batch, get_job, retry_after_seconds
from core.records import batch
from core.records.service import require_business
from core.webhooks.service import resolve_callback_url
from workers.publish import publish_chunks

log = logging.getLogger(__name__)
router = APIRouter(tags=["batch sync"], dependencies=[Depends(check_dry_run)])
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def batch_format(request: Request) -> str:
    """`json` or `ndjson`, from the Content-Type."""
    kind = media_type(request)
    if kind in NDJSON_TYPES:
        return "ndjson"
    if not kind or kind in JSON_TYPES or kind.endswith("+json"):
        return "json"
    raise DomainError("unsupported_media_type", "Send the batch as application/json or application/x-ndjson.", 415)


BATCH_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"description": "`malformed_body`"},
    404: {"description": "No such business"},
    408: {"description": "`body_timeout`: the body stalled"},
    413: {"description": "`too_many_records`, `body_too_large`, or `record_too_large` (a JSON record over 8 MiB)"},
    415: {"description": "Unsupported media type"},
    422: {"description": "`invalid_envelope` or `empty_batch`"},
    429: {"description": "`too_many_concurrent_uploads` or `rate_limited`: retry after `Retry-After` seconds"},
    503: {"description": "`service_unavailable`: retry after `Retry-After` seconds"},
}
_FINISHED = "With `Prefer: wait=N`, the job finished in time: Pocketflows' synchronous shape"
_ACCEPTED = "The job and every record are stored; poll `Location`"


DryRun = Annotated[
    bool,
    Query(
        description="A dry run: the job is processed like a real one, by the same rules and against the current "
        "stored state, but writes nothing; its results say what each record would become (`changed_fields`, and "
        "`changes` for a replaced one). `Prefer: wait` is not applied to it.",
    ),
]


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


async def _accept(
    request: Request, partner_id: str, kind: str, business_id: str | None, callback_url: str | None, dry_run: bool
) -> Response:
    """Take an upload slot, read the whole body, then store the job in one transaction and publish it."""
    fmt = batch_format(request)
    async with batch_upload(request, partner_id) as body:
        response = await run_in_threadpool(
            _store, request, partner_id, kind, business_id, callback_url, dry_run, fmt, body
        )
    # A dry run stores nothing that Pocketflows' synchronous shape shows (the objects as stored): it is polled.
    wait = 0 if dry_run else _wait_seconds(request)
    if wait and response.status_code == 202 and not response.headers.get("Idempotent-Replayed"):
        job_id = response.headers["Location"].rsplit("/", 1)[1]
        try:
            finished = await _wait_for(partner_id, job_id, wait)
        except Exception:  # the job is stored and published: its 202 stands, whatever went wrong here
            log.exception("could not wait for the job", extra={"job_id": job_id})
            finished = None
        if finished is not None:
            finished.headers["Preference-Applied"] = f"wait={wait}"
            return finished
    return response


def _store(
    request: Request,
    partner_id: str,
    kind: str,
    business_id: str | None,
    callback_url: str | None,
    dry_run: bool,
    fmt: str,
    body: SpooledBody,
) -> Response:
    """Store the job and every record; committed before the 202 is returned (a crash after it loses nothing), its
    first chunks published once it is."""
    with session_scope() as session:
        if business_id is not None:
            require_business(session, partner_id=partner_id, business_id=business_id)

        def handle() -> Response:
            webhook_url = resolve_callback_url(session, partner_id=partner_id, callback_url=callback_url)
            read = batch.BytesRead()
            elements: Iterable[Any] = (
                batch.ndjson_elements(body.file, read)
                if fmt == "ndjson"
                else batch.json_elements(kind, body.file, read)
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
                    dry_run=dry_run,
                    api_key_id=request.state.key_id,
                    read=read,
                )
            after_commit(session, lambda: publish_chunks(accepted.to_publish))
            job = accepted.job
            log.info(
                "job accepted",
                extra={"job_id": job.id, "records": job.total, "chunks": job.chunk_count, "dry_run": job.dry_run},
            )
            retry_after = retry_after_seconds(job, datetime.now(UTC)) or 1
            return json_response(
                job_view(job), 202, headers={"Location": f"/jobs/{job.id}", "Retry-After": str(retry_after)}
            )

        return idempotent(request, session, partner_id, body, handle)


async def _wait_for(partner_id: str, job_id: str, seconds: int) -> Response | None:
    """The finished job's synchronous answer, polled until `seconds` have passed (None if it is still running).
    The wait itself holds no thread and no connection: only each short poll does."""
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        finished = await run_in_threadpool(_finished_answer, partner_id, job_id)
        if finished is not None:
            return finished
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        # Wait the whole N seconds: the last check comes at the deadline, not one backoff step before it.
        await anyio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.5)


def _finished_answer(partner_id: str, job_id: str) -> Response | None:
    with session_scope() as session:
        job = get_job(session, partner_id=partner_id, job_id=job_id)
        if job.status not in FINISHED:
            return None
        body = compat_body(session, job)
        body["job"] = job_view(job)
        return json_response(body, 200)


@router.post(
    "/sync/businesses/batch",
    status_code=202,
    responses={
        **BATCH_RESPONSES,
        200: ok("BusinessBatchAnswer", _FINISHED, required_headers=("Preference-Applied",)),
        202: ok("Job", _ACCEPTED, required_headers=("Location", "Retry-After")),
    },
    openapi_extra=request_body("BusinessBatch", ndjson=True),
    summary="Sync many businesses",
)
async def sync_businesses_batch(
    request: Request, partner_id: PartnerId, callback_url: CallbackUrl = None, dry_run: DryRun = False
) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS businesses as `{"businesses": [...]}` or NDJSON; answer with a job."""
    return await _accept(request, partner_id, "businesses", None, callback_url, dry_run)


@router.post(
    "/sync/businesses/{business_id}/customers/batch",
    status_code=202,
    responses={
        **BATCH_RESPONSES,
        200: ok("CustomerBatchAnswer", _FINISHED, required_headers=("Preference-Applied",)),
        202: ok("Job", _ACCEPTED, required_headers=("Location", "Retry-After")),
    },
    openapi_extra=request_body("CustomerBatch", ndjson=True),
    summary="Sync many customers of a business",
)
async def sync_customers_batch(
    request: Request,
    partner_id: PartnerId,
    business_id: str,
    callback_url: CallbackUrl = None,
    dry_run: DryRun = False,
) -> Response:
    """Accept up to PFSYNC_MAX_BATCH_RECORDS customers as `{"customers": [...]}` or NDJSON; answer with a job."""
    return await _accept(request, partner_id, "customers", business_id, callback_url, dry_run)
