"""Businesses and customers: reads, API representations, and the single-record sync."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import psycopg
from sqlalchemy.orm import Session

from core import ids
from core.errors import RECORD_ERROR_STATUS, TOO_MANY_ERRORS, DomainError, FieldError, bounded_errors, not_found
from core.models import Business, Customer
from core.partners.service import key_revoked
from core.records import repository
from core.records.repository import MAX_ATTEMPTS, RETRYABLE, Contended, apply_records, preview_records
from core.records.rules import FAILED, REPLACED, Payload, RecordOutcome, Scope, desired_state, plan_records
from core.records.schemas import parse_record

T = TypeVar("T", Business, Customer)
log = logging.getLogger(__name__)


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
    business = repository.find_business(session, partner_id=partner_id, business_id=business_id)
    if business is None:
        raise not_found("business")
    return business


def require_business(session: Session, *, partner_id: str, business_id: str) -> None:
    """`not_found` unless the partner has a business with that id: `get_business` without loading an ORM object,
    for the routes that only need to know (one plain query)."""
    if "\x00" in business_id:
        raise not_found("business")
    if not repository.business_exists(session, partner_id=partner_id, business_id=business_id):
        raise not_found("business")


def get_customer(session: Session, *, partner_id: str, customer_id: str) -> Customer:
    """The partner's customer with that id, or `not_found`."""
    if "\x00" in customer_id:
        raise not_found("customer")
    customer = repository.find_customer(session, partner_id=partner_id, customer_id=customer_id)
    if customer is None:
        raise not_found("customer")
    return customer


customers_by_id = repository.customers_by_id


def _page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], bool]:
    return rows[:limit], len(rows) > limit


def list_businesses(
    session: Session, *, partner_id: str, external_id: str | None, limit: int, starting_after: str | None
) -> tuple[Sequence[Business], bool]:
    """The partner's businesses, oldest first, one page."""
    rows = repository.businesses_page(
        session, partner_id=partner_id, external_id=external_id, limit=limit + 1, starting_after=starting_after
    )
    return _page(rows, limit)


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
    rows = repository.customers_page(
        session,
        business_id=business_id,
        external_id=external_id,
        email_address=email_address,
        limit=limit + 1,
        starting_after=starting_after,
    )
    return _page(rows, limit)


next_write_seq = repository.next_write_seq


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


def sync_one(
    session: Session, *, scope: Scope, body: dict[str, Any], dry_run: bool = False
) -> tuple[RecordOutcome, dict[str, Any]]:
    """Create or replace one record by the sync rules; return its outcome and the stored record. `dry_run`: change
    nothing, and return what the outcome and the record would be (`preview_one`)."""
    payload = parse_record(scope.kind, body)
    if isinstance(payload, list):
        raise record_error(payload)
    if dry_run:
        return preview_one(session, scope=scope, payload=payload)
    return apply_one(session, scope=scope, payload=payload)


def preview_one(session: Session, *, scope: Scope, payload: Payload) -> tuple[RecordOutcome, dict[str, Any]]:
    """What syncing one validated record would do, by the same rules, changing nothing (SPEC §9): its outcome and
    the would-be record. A failed record raises the problem the real sync would answer.

    The would-be record is the stored one with the payload's properties, its timestamps as stored (nothing is
    written); a would-be created record has no id and no timestamps yet (null).
    """
    outcome = preview_records(session, scope=scope, records=[(0, payload)]).outcomes[0]
    if outcome.outcome == FAILED:
        raise record_error(outcome.errors)
    if outcome.id is None:
        return outcome, _new_view(scope, desired_state(scope.kind, payload, None))
    view = _stored_view(session, scope, outcome.id)
    if outcome.outcome == REPLACED:
        view.update(desired_state(scope.kind, payload, view["external_id"]))
    return outcome, view


def _new_view(scope: Scope, state: dict[str, Any]) -> dict[str, Any]:
    """A record that does not exist yet, as the API would show it once created (without an id or timestamps)."""
    if scope.kind == "businesses":
        return {
            "id": None,
            "object": "business",
            "external_id": state["external_id"],
            "name": state["name"],
            "metadata": state["metadata"],
            "created_at": None,
            "updated_at": None,
        }
    return {
        "id": None,
        "object": "customer",
        "business_id": scope.business_id,
        "external_id": state["external_id"],
        "email_address": state["email_address"],
        "phone_number": state["phone_number"],
        "full_name": state["full_name"],
        "metadata": state["metadata"],
        "unsubscribed": None,
        "created_at": None,
        "updated_at": None,
    }


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
    row = repository.stored_row(session, kind=scope.kind, record_id=record_id)
    if scope.kind == "businesses":
        return business_view(_StoredBusiness(*row))
    return customer_view(_StoredCustomer(*row))


def sync_alone(
    conn: psycopg.Connection[Any], *, scope: Scope, payload: Payload | DomainError, key_id: str | None
) -> tuple[RecordOutcome, dict[str, Any]]:
    """Sync one record in a transaction of its own, on a connection in autocommit mode with none open, and commit
    it: the single-record sync routes' whole work in two round trips (`repository.start_single` and
    `finish_single`). Returns the outcome and the stored record, as `apply_one` does.

    The problems come in the order the routes have always answered them: no such business (customers), then the
    API key revoked (`key_id`, held live until the commit), then `payload` itself when it is the problem its body
    raised, then what the sync rules say. A contended attempt is rolled back whole and tried again with the same
    write sequence, so a retry is ordered where the first attempt was accepted.
    """
    valid = None if isinstance(payload, DomainError) else payload
    prefix = ids.BUSINESS if scope.kind == "businesses" else ids.CUSTOMER
    seq: int | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            start = repository.start_single(conn, scope=scope, payload=valid, seq=seq, key_id=key_id)
            seq = start.seq
            if not start.business_found:
                raise not_found("business")
            if not start.key_live:
                raise key_revoked()
            if valid is None:
                assert isinstance(payload, DomainError)
                raise payload
            plan = plan_records(
                scope=scope, seq=seq, records=[(0, valid)], rows=start.rows, new_id=lambda: ids.new_id(prefix)
            )
            outcome = plan.outcomes[0]
            if outcome.outcome == FAILED:
                raise record_error(outcome.errors)
            stored = repository.finish_single(conn, scope=scope, seq=seq, plan=plan)
        except (Contended, *RETRYABLE) as exc:
            repository.roll_back_single(conn)
            if attempt == MAX_ATTEMPTS:
                raise
            log.info("sync contended (%s), attempt %d: %s", type(exc).__name__, attempt, exc)
            time.sleep(random.uniform(0, 0.02 * attempt))
            continue
        except BaseException:
            repository.roll_back_single(conn)
            raise
        if stored is None:  # nothing written: the record as it was loaded (and locked) is the stored one
            (row,) = (r for r in start.rows if r["id"] == outcome.id)
            stored = tuple(row[c] for c in repository.VIEW_COLUMNS[scope.kind])
        if scope.kind == "businesses":
            return outcome, business_view(_StoredBusiness(*stored))
        return outcome, customer_view(_StoredCustomer(*stored))
    raise AssertionError("unreachable")
