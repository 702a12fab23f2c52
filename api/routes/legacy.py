"""Pocketflows' pre-sync endpoints, kept while partners migrate to the sync endpoints (SPEC §4 "Legacy").

Every answer, errors included, carries `Deprecation: true` and a `Link` to the sync endpoint that replaces it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.body import Body, SpooledBody, batch_upload, parse_json_object, require_json
from api.deps import DbSession, PartnerId, no_dry_run
from api.idempotency import idempotent
from api.openapi import ok, request_body
from api.responses import json_response
from core.errors import DomainError, not_found
from core.models import Business, Customer
from core.records import legacy
from core.records.service import get_business, get_customer

# Each legacy route's successor, by route path; `{name}` is filled from the path (or what the handler learnt).
SUCCESSORS = {
    "/businesses": "/sync/businesses",
    "/businesses/{business_id}": "/sync/businesses",
    "/businesses/{business_id}/customers": "/sync/businesses/{business_id}/customers",
    "/businesses/{business_id}/customers/batch": "/sync/businesses/{business_id}/customers/batch",
    "/businesses/{business_id}/customers/batch_update": "/sync/businesses/{business_id}/customers/batch",
    "/customers/{customer_id}": "/sync/businesses/{business_id}/customers",
}


def deprecation_headers(request: Request, successor: str) -> dict[str, str]:
    """`Deprecation` and the `Link` to the successor, its `{name}`s filled from the path parameters."""
    params = {**request.path_params, **getattr(request.state, "successor_params", {})}
    for name, value in params.items():
        successor = successor.replace("{" + name + "}", quote(str(value), safe=""))
    return {"Deprecation": "true", "Link": f'<{successor}>; rel="successor-version"'}


class LegacyRoute(APIRoute):
    """A deprecated route: its answers, errors included, point to the successor."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        successor = SUCCESSORS[self.path_format]

        async def deprecated(request: Request) -> Response:
            try:
                response = await handler(request)
            except (DomainError, StarletteHTTPException) as exc:
                # Re-raised, not answered here, so the session still rolls back and the app's handlers answer.
                exc.headers = {**(exc.headers or {}), **deprecation_headers(request, successor)}
                raise
            response.headers.update(deprecation_headers(request, successor))
            return response

        return deprecated


router = APIRouter(tags=["legacy"], deprecated=True, route_class=LegacyRoute, dependencies=[Depends(no_dry_run)])

LEGACY_RESPONSES: dict[int | str, dict[str, object]] = {
    404: {"description": "No such business or customer"},
    409: {"description": "`external_id_conflict` or `email_address_taken`"},
    422: {"description": "`unknown_field` or `validation_error`"},
}
BATCH_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"description": "`malformed_body`"},
    404: {"description": "No such business"},
    413: {"description": "`too_many_records` (over PFSYNC_LEGACY_MAX_BATCH_RECORDS) or `body_too_large`"},
    415: {"description": "Not JSON"},
    422: {"description": "`invalid_envelope` or `empty_batch`"},
}


async def legacy_batch_body(request: Request, partner_id: PartnerId) -> AsyncIterator[SpooledBody]:
    """The JSON body of a legacy batch, read whole (413 past PFSYNC_MAX_BODY_BYTES) while holding one of the
    partner's upload slots, as any batch upload does."""
    require_json(request, "the batch")
    async with batch_upload(request, partner_id) as body:
        yield body


BatchBody = Annotated[SpooledBody, Depends(legacy_batch_body)]


def _business(session: Session, partner_id: str, business_id: str) -> Business:
    if "\x00" in business_id:  # PostgreSQL cannot compare text holding NUL; no id holds one
        raise not_found("business")
    return get_business(session, partner_id=partner_id, business_id=business_id)


def _write(
    request: Request, session: Session, partner_id: str, body: bytes | SpooledBody, write: Callable[[], Any]
) -> Response:
    """Run the write once per Idempotency-Key and answer 200 with what it returns."""
    return idempotent(request, session, partner_id, body, lambda: json_response(write()))


@router.post(
    "/businesses",
    responses={**LEGACY_RESPONSES, 200: ok("Business")},
    openapi_extra=request_body("LegacyBusinessCreate"),
    summary="Create a business (legacy)",
)
def create_business(request: Request, session: DbSession, partner_id: PartnerId, body: Body) -> Response:
    """Create a business: `name` required, `external_id` and `metadata` optional. Successor: `POST /sync/businesses`."""
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: legacy.create_business(session, partner_id=partner_id, body=parse_json_object(body)),
    )


@router.post(
    "/businesses/{business_id}",
    responses={**LEGACY_RESPONSES, 200: ok("Business")},
    openapi_extra=request_body("LegacyBusinessUpdate"),
    summary="Update a business (legacy)",
)
def update_business(
    request: Request, session: DbSession, partner_id: PartnerId, business_id: str, body: Body
) -> Response:
    """Change only the fields sent. Successor: `POST /sync/businesses` with `id` and `external_id`."""
    business = _business(session, partner_id, business_id)
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: legacy.update_business(session, business=business, body=parse_json_object(body)),
    )


@router.post(
    "/businesses/{business_id}/customers",
    responses={**LEGACY_RESPONSES, 200: ok("Customer")},
    openapi_extra=request_body("LegacyCustomerCreate"),
    summary="Create a customer (legacy)",
)
def create_customer(
    request: Request, session: DbSession, partner_id: PartnerId, business_id: str, body: Body
) -> Response:
    """Create a customer: `email_address` required. Successor: `POST /sync/businesses/{business_id}/customers`."""
    business = _business(session, partner_id, business_id)
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: legacy.create_customer(session, business=business, body=parse_json_object(body)),
    )


@router.post(
    "/businesses/{business_id}/customers/batch",
    responses={
        **BATCH_RESPONSES,
        200: ok("LegacyCustomerBatchAnswer", "An object (or null) per index, and every error"),
    },
    openapi_extra=request_body("LegacyCustomerBatch"),
    summary="Create up to 1000 customers, each alone (legacy)",
)
def create_customers(
    request: Request, session: DbSession, partner_id: PartnerId, business_id: str, body: BatchBody
) -> Response:
    """Synchronous partial success: 200 `{"customers": [customer or null per index], "errors": [{"message",
    "path"}]}`. Successor: `POST /sync/businesses/{business_id}/customers/batch`."""
    business = _business(session, partner_id, business_id)
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: legacy.create_customers(session, business=business, elements=legacy.batch_elements(body.file)),
    )


@router.post(
    "/businesses/{business_id}/customers/batch_update",
    responses={
        **BATCH_RESPONSES,
        200: ok("LegacyCustomerBatchUpdateAnswer", "Every customer, updated"),
        409: {"description": "Every error is a conflict; nothing changed"},
    },
    openapi_extra=request_body("LegacyCustomerBatchUpdate"),
    summary="Update up to 1000 customers, all or nothing (legacy)",
)
def update_customers(
    request: Request, session: DbSession, partner_id: PartnerId, business_id: str, body: BatchBody
) -> Response:
    """Each `{"id", ...}` changes only the fields sent; if any fails, none changes and the problem lists every
    error. Successor: `POST /sync/businesses/{business_id}/customers/batch`."""
    business = _business(session, partner_id, business_id)
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: {
            "customers": legacy.update_customers(session, business=business, elements=legacy.batch_elements(body.file))
        },
    )


@router.post(
    "/customers/{customer_id}",
    responses={**LEGACY_RESPONSES, 200: ok("Customer")},
    openapi_extra=request_body("LegacyCustomerUpdate"),
    summary="Update a customer (legacy)",
)
def update_customer(
    request: Request, session: DbSession, partner_id: PartnerId, customer_id: str, body: Body
) -> Response:
    """Change only the fields sent. Successor: `POST /sync/businesses/{business_id}/customers`."""
    if "\x00" in customer_id:
        raise not_found("customer")
    customer: Customer = get_customer(session, partner_id=partner_id, customer_id=customer_id)
    request.state.successor_params = {"business_id": customer.business_id}
    return _write(
        request,
        session,
        partner_id,
        body,
        lambda: legacy.update_customer(session, customer=customer, body=parse_json_object(body)),
    )
