"""Reads of businesses and customers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import DbSession, PartnerId
from api.openapi import ok
from api.responses import json_response, list_body
from core.records import service as resources

router = APIRouter(tags=["reads"])

# PostgreSQL cannot compare text holding a NUL character: refuse it as a bad parameter.
_NO_NUL = r"^[^\x00]*$"
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000")]
Cursor = Annotated[str | None, Query(pattern=_NO_NUL, description="Return items after this id (`next_cursor`)")]
ExternalId = Annotated[str | None, Query(pattern=_NO_NUL, description="Only the record with this external_id")]
EmailFilter = Annotated[
    str | None, Query(pattern=_NO_NUL, description="Only the customer with this email address (any case)")
]


@router.get("/businesses/{business_id}", summary="Get a business", responses={200: ok("Business")})
def get_business(session: DbSession, partner_id: PartnerId, business_id: str) -> Response:
    business = resources.get_business(session, partner_id=partner_id, business_id=business_id)
    return json_response(resources.business_view(business))


@router.get("/businesses", summary="List businesses, oldest first", responses={200: ok("BusinessList")})
def list_businesses(
    session: DbSession,
    partner_id: PartnerId,
    external_id: ExternalId = None,
    limit: Limit = 100,
    starting_after: Cursor = None,
) -> Response:
    rows, has_more = resources.list_businesses(
        session, partner_id=partner_id, external_id=external_id, limit=limit, starting_after=starting_after
    )
    return json_response(list_body([resources.business_view(b) for b in rows], has_more))


@router.get(
    "/businesses/{business_id}/customers",
    summary="List a business's customers, oldest first",
    responses={200: ok("CustomerList")},
)
def list_customers(
    session: DbSession,
    partner_id: PartnerId,
    business_id: str,
    external_id: ExternalId = None,
    email_address: EmailFilter = None,
    limit: Limit = 100,
    starting_after: Cursor = None,
) -> Response:
    resources.get_business(session, partner_id=partner_id, business_id=business_id)
    rows, has_more = resources.list_customers(
        session,
        business_id=business_id,
        external_id=external_id,
        email_address=email_address,
        limit=limit,
        starting_after=starting_after,
    )
    return json_response(list_body([resources.customer_view(c) for c in rows], has_more))


@router.get("/customers/{customer_id}", summary="Get a customer", responses={200: ok("Customer")})
def get_customer(session: DbSession, partner_id: PartnerId, customer_id: str) -> Response:
    customer = resources.get_customer(session, partner_id=partner_id, customer_id=customer_id)
    return json_response(resources.customer_view(customer))
