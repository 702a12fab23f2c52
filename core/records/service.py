"""Businesses and customers: reads, API representations, and the single-record sync."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import orjson
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.errors import RECORD_ERROR_STATUS, TOO_MANY_ERRORS, DomainError, FieldError, bounded_errors, not_found
from core.models import Business, Customer
from core.records.repository import apply_records, driver_connection
from core.records.rules import FAILED, Payload, RecordOutcome, Scope
from core.records.schemas import parse_record

T = TypeVar("T", Business, Customer)


def rfc3339(value: datetime) -> str:
    """A timestamp as RFC 3339 in UTC, to the millisecond."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def business_view(b: Business | _StoredBusiness) -> dict[str, Any]:
    """A business as the API shows it."""
    return {
        "id": b.id,
        "object": "business",
        "external_id": b.external_id,
        "name": b.name,
        "metadata": b.metadata_,
        "created_at": rfc3339(b.created_at),
        "updated_at": rfc3339(b.updated_at),
    }


def customer_view(c: Customer | _StoredCustomer) -> dict[str, Any]:
    """A customer as the API shows it."""
    return {
        "id": c.id,
        "object": "customer",
        "business_id": c.business_id,
        "external_id": c.external_id,
        "email_address": c.email_address,
        "phone_number": c.phone_number,
        "full_name": c.full_name,
        "metadata": c.metadata_,
        "unsubscribed": c.unsubscribed,
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    }


def get_business(session: Session, *, partner_id: str, business_id: str) -> Business:
    """The partner's business with that id, or `not_found`."""
    if "\x00" in business_id:  # no id holds a NUL, and PostgreSQL refuses to compare text with one
        raise not_found("business")
    business = session.scalar(select(Business).where(Business.id == business_id, Business.partner_id == partner_id))
    if business is None:
        raise not_found("business")
    return business


def require_business(session: Session, *, partner_id: str, business_id: str) -> None:
    """`not_found` unless the partner has a business with that id: `get_business` without loading an ORM object,
    for the routes that only need to know (one plain query)."""
    if "\x00" in business_id:
        raise not_found("business")
    found = (
        driver_connection(session)
        .execute("SELECT 1 FROM businesses WHERE id = %s AND partner_id = %s", (business_id, partner_id))
        .fetchone()
    )
    if found is None:
        raise not_found("business")


def get_customer(session: Session, *, partner_id: str, customer_id: str) -> Customer:
    """The partner's customer with that id, or `not_found`."""
    if "\x00" in customer_id:
        raise not_found("customer")
    customer = session.scalar(select(Customer).where(Customer.id == customer_id, Customer.partner_id == partner_id))
    if customer is None:
        raise not_found("customer")
    return customer


def customers_by_id(
    session: Session, *, business_id: str, customer_ids: Sequence[str], for_update: bool = False
) -> dict[str, Customer]:
    """The business's customers among `customer_ids`, by id; `for_update` locks them and rereads them."""
    query = select(Customer).where(Customer.business_id == business_id, Customer.id.in_(list(customer_ids)))
    if for_update:
        query = query.order_by(Customer.id).with_for_update().execution_options(populate_existing=True)
    return {c.id: c for c in session.scalars(query)}


def _page(
    session: Session, query: Select[Any], id_column: Any, *, limit: int, starting_after: str | None
) -> tuple[Sequence[T], bool]:
    if starting_after:
        query = query.where(id_column > starting_after)
    rows = session.scalars(query.order_by(id_column).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def list_businesses(
    session: Session, *, partner_id: str, external_id: str | None, limit: int, starting_after: str | None
) -> tuple[Sequence[Business], bool]:
    """The partner's businesses, oldest first, one page."""
    query = select(Business).where(Business.partner_id == partner_id)
    if external_id is not None:
        query = query.where(Business.external_id == external_id)
    return _page(session, query, Business.id, limit=limit, starting_after=starting_after)


def list_customers(
    session: Session,
    *,
    business_id: str,
    external_id: str | None,
    email_address: str | None,
    limit: int,
    starting_after: str | None,
) -> tuple[Sequence[Customer], bool]:
    """A business's customers, oldest first, one page; email compared case-insensitively."""
    query = select(Customer).where(Customer.business_id == business_id)
    if external_id is not None:
        query = query.where(Customer.external_id == external_id)
    if email_address is not None:
        query = query.where(func.lower(Customer.email_address) == email_address.lower())
    return _page(session, query, Customer.id, limit=limit, starting_after=starting_after)


def next_write_seq(session: Session) -> int:
    """The sequence number of a newly accepted write (SPEC §3 rule 7)."""
    row = driver_connection(session).execute("SELECT nextval('write_seq')").fetchone()
    assert row is not None
    return int(row[0])


def record_error(errors: list[FieldError]) -> DomainError:
    """The problem a single sync answers for a failed record (its errors bounded as SPEC §7 says)."""
    errors = bounded_errors(errors)
    first = errors[0]
    if first.code in RECORD_ERROR_STATUS:
        return DomainError(first.code, first.message, RECORD_ERROR_STATUS[first.code], errors)
    # `too_many_errors` only says there were more of the same kind: it does not change what the record is.
    listed = [e for e in errors if e.code != TOO_MANY_ERRORS] or errors
    code = "unknown_field" if all(e.code == "unknown_field" for e in listed) else "validation_error"
    detail = "; ".join(f"{e.path}: {e.message}" if e.path else e.message for e in errors)
    return DomainError(code, detail, 422, errors)


def sync_one(session: Session, *, scope: Scope, body: dict[str, Any]) -> tuple[RecordOutcome, dict[str, Any]]:
    """Create or replace one record by the sync rules; return its outcome and the stored record."""
    payload = parse_record(scope.kind, body)
    if isinstance(payload, list):
        raise record_error(payload)
    return apply_one(session, scope=scope, payload=payload)


def apply_one(
    session: Session, *, scope: Scope, payload: Payload, create_only: bool = False
) -> tuple[RecordOutcome, dict[str, Any]]:
    """Apply one validated record as an accepted write of its own; return its outcome and the stored record.

    A failed record raises its problem. `create_only`: see `core.records.rules.plan_records`.
    """
    seq = next_write_seq(session)
    outcome = apply_records(session, scope=scope, seq=seq, records=[(0, payload)], create_only=create_only)[0]
    if outcome.outcome == FAILED:
        raise record_error(outcome.errors)
    assert outcome.id is not None
    session.expire_all()  # ORM objects the caller holds are stale now
    return outcome, _stored_view(session, scope, outcome.id)


class _StoredBusiness(NamedTuple):
    id: str
    external_id: str | None
    name: str
    metadata_: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class _StoredCustomer(NamedTuple):
    id: str
    business_id: str
    external_id: str | None
    email_address: str | None
    phone_number: str | None
    full_name: str | None
    metadata_: dict[str, Any]
    unsubscribed: str | None
    created_at: datetime
    updated_at: datetime


def _stored_view(session: Session, scope: Scope, record_id: str) -> dict[str, Any]:
    """The record as stored now, as the API shows it: one plain query, no ORM objects (a single sync answers it)."""
    with driver_connection(session).cursor() as cur:
        if scope.kind == "businesses":
            cur.execute(
                "SELECT id, external_id, name, metadata::text, created_at, updated_at FROM businesses WHERE id = %s",
                (record_id,),
            )
            b = cur.fetchone()
            assert b is not None
            return business_view(_StoredBusiness(b[0], b[1], b[2], orjson.loads(b[3]), b[4], b[5]))
        cur.execute(
            "SELECT id, business_id, external_id, email_address, phone_number, full_name, metadata::text, "
            "unsubscribed, created_at, updated_at FROM customers WHERE id = %s",
            (record_id,),
        )
        c = cur.fetchone()
        assert c is not None
        return customer_view(_StoredCustomer(c[0], c[1], c[2], c[3], c[4], c[5], orjson.loads(c[6]), c[7], c[8], c[9]))
