"""Sync endpoints: single records (synchronous) and batches (jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.body import Body, parse_json_object
from api.deps import DbSession, PartnerId, one_dry_run
from api.idempotency import idempotent
from api.openapi import either, ok, request_body
from api.responses import json_response
from core.db import commit
from core.records.rules import Scope
from core.records.service import require_business, sync_one

router = APIRouter(tags=["sync"], dependencies=[Depends(one_dry_run)])

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


def _sync_response(
    request: Request, session: DbSession, partner_id: str, body: bytes, scope: Scope, dry_run: bool
) -> Response:
    def handle() -> Response:
        outcome, view = sync_one(session, scope=scope, body=parse_json_object(body), dry_run=dry_run)
        return json_response(view, headers={"Sync-Outcome": outcome.outcome})

    response = idempotent(request, session, partner_id, body, handle)
    # Committed here, in the route's thread, rather than by the session dependency after another thread switch.
    commit(session)
    return response


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
def sync_business(
    request: Request, session: DbSession, partner_id: PartnerId, body: Body, dry_run: DryRun = False
) -> Response:
    """Create or wholly replace a business, found by `id` or else by `external_id`."""
    return _sync_response(request, session, partner_id, body, Scope("businesses", partner_id), dry_run)


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
def sync_customer(
    request: Request,
    session: DbSession,
    partner_id: PartnerId,
    business_id: str,
    body: Body,
    dry_run: DryRun = False,
) -> Response:
    """Create or wholly replace a customer of the business, found by `id` or else by `external_id`."""
    require_business(session, partner_id=partner_id, business_id=business_id)
    scope = Scope("customers", partner_id, business_id)
    return _sync_response(request, session, partner_id, body, scope, dry_run)
