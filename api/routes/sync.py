"""Sync endpoints: single records (synchronous) and batches (jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.body import parse_json_object, single_body
from api.deps import current_partner, one_dry_run
from api.idempotency import idempotent
from api.openapi import either, ok, request_body
from api.responses import json_response
from core.db import autocommit_connection, commit, new_session, roll_back
from core.errors import DomainError, not_found
from core.records.rules import Payload, Scope
from core.records.schemas import parse_record
from core.records.service import record_error, require_business, sync_alone, sync_one

router = APIRouter(tags=["sync"])

SYNC_RESPONSES: dict[int | str, dict[str, object]] = {
    404: {"description": "No such record (by `id`) or business"},
    409: {"description": "`external_id_conflict` or `email_address_taken`"},
    422: {"description": "`missing_identifier`, `unknown_field` or `validation_error`"},
}
_OUTCOME = ("Sync-Outcome",)
DryRun = Annotated[
    bool,
    Query(
        description="A dry run: change nothing, and answer what the sync would do (`Sync-Outcome`) and the record "
        "it would leave (a record it would create has no `id` nor timestamps yet: null). Errors are the real ones.",
    ),
]


def _sync_response(request: Request, partner_id: str, body: bytes, scope: Scope, dry_run: bool) -> Response:
    """Sync the record the body holds and answer it.

    The common request, neither a dry run nor under an `Idempotency-Key`, is the whole sync in one transaction of
    two round trips on a connection of its own (`sync_alone`). The others go through a session: an idempotent
    request stores its answer in the transaction of its work, a dry run only reads.
    """
    if not dry_run and "idempotency-key" not in request.headers:
        payload: Payload | DomainError
        try:
            payload = _payload(scope, body)
        except DomainError as problem:  # answered after the checks that come first (no such business, key revoked)
            payload = problem
        with autocommit_connection() as conn:
            outcome, view = sync_alone(conn, scope=scope, payload=payload, key_id=request.state.key_id)
        return json_response(view, headers={"Sync-Outcome": outcome.outcome})

    session = new_session()
    try:
        if scope.business_id is not None:
            require_business(session, partner_id=partner_id, business_id=scope.business_id)

        def handle() -> Response:
            outcome, view = sync_one(session, scope=scope, body=parse_json_object(body), dry_run=dry_run)
            return json_response(view, headers={"Sync-Outcome": outcome.outcome})

        response = idempotent(request, session, partner_id, body, handle)
    except BaseException:
        roll_back(session)
        raise
    commit(session)
    return response


def _payload(scope: Scope, body: bytes) -> Payload:
    """The body as a validated record of the scope's kind; its problem (400, 422) when it is not one."""
    payload = parse_record(scope.kind, parse_json_object(body))
    if isinstance(payload, list):
        raise record_error(payload)
    return payload


@router.post(
    "/sync/businesses",
    responses={
        **SYNC_RESPONSES,
        200: ok(
            either("Business", "BusinessPreview"),
            "The stored business (in a dry run, the business as it would be); `Sync-Outcome` tells what happened",
            required_headers=_OUTCOME,
        ),
    },
    openapi_extra=request_body("BusinessSync"),
    summary="Create or replace one business",
)
async def sync_business(request: Request, dry_run: DryRun = False) -> Response:
    """Create or wholly replace a business, found by `id` or else by `external_id`."""
    one_dry_run(request)
    partner_id, body = await _authenticated_body(request)
    return await run_in_threadpool(_sync_response, request, partner_id, body, Scope("businesses", partner_id), dry_run)


@router.post(
    "/sync/businesses/{business_id}/customers",
    responses={
        **SYNC_RESPONSES,
        200: ok(
            either("Customer", "CustomerPreview"),
            "The stored customer (in a dry run, the customer as it would be); `Sync-Outcome` tells what happened",
            required_headers=_OUTCOME,
        ),
    },
    openapi_extra=request_body("CustomerSync"),
    summary="Create or replace one customer",
)
async def sync_customer(request: Request, business_id: str, dry_run: DryRun = False) -> Response:
    """Create or wholly replace a customer of the business, found by `id` or else by `external_id`."""
    one_dry_run(request)
    partner_id, body = await _authenticated_body(request)
    if "\x00" in business_id:  # no id holds a NUL, and PostgreSQL refuses to compare text with one
        raise not_found("business")
    scope = Scope("customers", partner_id, business_id)
    return await run_in_threadpool(_sync_response, request, partner_id, body, scope, dry_run)


async def _authenticated_body(request: Request) -> tuple[str, bytes]:
    """The authenticated partner (`api.deps.current_partner`), then the body (`api.body.single_body`): the other
    routes' dependencies, called in the request's task rather than resolved by FastAPI, whose resolution was about
    a tenth of the Python time of a single sync, the most frequent request. The sync itself then runs in the
    thread pool, as a `def` route does."""
    partner_id = await current_partner(request)
    return partner_id, await single_body(request)
