"""Pocketflows' pre-sync endpoints (SPEC §4 "Legacy"), expressed through the sync rules.

No rule lives here: fields are validated by the sync payload models (`core.records.schemas`), uniqueness and the
write order are decided by `core.records.rules`, and batch duplicates by `core.records.batch`, exactly as for a
sync. A legacy create is a record applied with `create_only`; a merge-update reads the stored record (locked, so no
write slips in between), lays the fields sent over it, validates the merged object with the same payload model and
applies it by id. Each call takes a write sequence number like any accepted write (SPEC §3 rule 7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO, Any

from sqlalchemy.orm import Session

from core.config import settings
from core.errors import RECORD_ERROR_STATUS, DomainError, FieldError
from core.models import Business, Customer
from core.records.batch import ParsedBatch, json_elements, mark_duplicates
from core.records.repository import apply_records
from core.records.rules import CREATED, FAILED, SINGULAR, Kind, Payload, RecordOutcome, Scope
from core.records.schemas import WRITABLE, parse_record
from core.records.service import apply_one, customer_view, customers_by_id, next_write_seq, record_error

BATCH_KEY = "customers"
Checked = Payload | list[FieldError]


def _creation_payload(kind: Kind, body: dict[str, Any]) -> Checked:
    """A legacy create: the sync model's rules, plus no `id` and, for a customer, an email address."""
    checked = parse_record(kind, body)
    errors = list(checked) if isinstance(checked, list) else []
    if body.get("id") is not None:
        errors.append(
            FieldError(
                "id_not_allowed", f"a create takes no id; update an existing {SINGULAR[kind]} at its own path", "id"
            )
        )
    if kind == "customers" and body.get("email_address") is None:
        errors.append(FieldError("required", "this field is required", "email_address"))
    return errors or checked


def _merged_payload(kind: Kind, record: Business | Customer, body: dict[str, Any]) -> Checked:
    """The sync payload that leaves `record` as stored except for the fields `body` sends."""
    errors: list[FieldError] = []
    if body.get("id") not in (None, record.id):
        errors.append(FieldError("id_mismatch", f"the body names another {SINGULAR[kind]} than {record.id}", "id"))
    stored = {prop: getattr(record, "metadata_" if prop == "metadata" else prop) for prop in WRITABLE[kind]}
    # `external_id` is always in the merged object, so an omitted one keeps its stored value.
    checked = parse_record(kind, {**stored, **body, "id": record.id})
    if isinstance(checked, list):
        errors.extend(checked)
    return errors or checked


def _created(session: Session, scope: Scope, body: dict[str, Any]) -> dict[str, Any]:
    payload = _creation_payload(scope.kind, body)
    if isinstance(payload, list):
        raise record_error(payload)
    return apply_one(session, scope=scope, payload=payload, create_only=True)[1]


def _updated(session: Session, scope: Scope, record: Business | Customer, body: dict[str, Any]) -> dict[str, Any]:
    session.refresh(record, with_for_update=True)
    payload = _merged_payload(scope.kind, record, body)
    if isinstance(payload, list):
        raise record_error(payload)
    return apply_one(session, scope=scope, payload=payload)[1]


def create_business(session: Session, *, partner_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /businesses`: a new business (`name` required); an external_id already held is a conflict."""
    return _created(session, Scope("businesses", partner_id), body)


def update_business(session: Session, *, business: Business, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /businesses/{id}`: change only the fields sent."""
    return _updated(session, Scope("businesses", business.partner_id), business, body)


def create_customer(session: Session, *, business: Business, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /businesses/{id}/customers`: a new customer (`email_address` required)."""
    return _created(session, Scope("customers", business.partner_id, business.id), body)


def update_customer(session: Session, *, customer: Customer, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /customers/{id}`: change only the fields sent."""
    return _updated(session, Scope("customers", customer.partner_id, customer.business_id), customer, body)


def batch_elements(body: IO[bytes]) -> list[Any]:
    """The records of a legacy batch body `{"customers": [...]}`: 1 to PFSYNC_LEGACY_MAX_BATCH_RECORDS of them,
    parsed incrementally (one past the limit is as far as it reads)."""
    limit = settings.legacy_max_batch_records
    elements: list[Any] = []
    for element in json_elements(BATCH_KEY, body):
        elements.append(element)
        if len(elements) > limit:
            raise DomainError(
                "too_many_records",
                f"The batch holds more than {limit} customers (PFSYNC_LEGACY_MAX_BATCH_RECORDS). Split it, or "
                "send it to its successor POST /sync/businesses/{business_id}/customers/batch "
                f"(up to {settings.max_batch_records}).",
                413,
            )
    if not elements:
        raise DomainError("empty_batch", "The batch holds no customers; send 1 or more.", 422)
    return elements


def _path(index: int, path: str | None) -> str:
    """Where an error of a batch record lies, as Pocketflows names it: `customers[3].email_address`."""
    return f"{BATCH_KEY}[{index}]" + (f".{path}" if path else "")


def _judge(elements: Sequence[Any], check: Callable[[dict[str, Any]], Checked]) -> list[tuple[int, Checked]]:
    """Each element checked alone, then against the others (records sharing a key all fail, as in a sync batch)."""
    batch = ParsedBatch()
    for element in elements:
        batch.add(BATCH_KEY, element)
    mark_duplicates(batch)
    records: list[tuple[int, Checked]] = []
    for index, element in enumerate(elements):
        errors: list[FieldError] = []
        if isinstance(element, dict):
            checked = check(element)
            if not isinstance(checked, list) and index not in batch.rejections:
                records.append((index, checked))
                continue
            if isinstance(checked, list):
                errors.extend(checked)
        errors.extend(batch.rejections.get(index, []))
        records.append((index, errors))
    return records


def _views(session: Session, business_id: str, outcomes: Sequence[RecordOutcome]) -> dict[str, dict[str, Any]]:
    """The stored customers the outcomes name, read once the batch is written."""
    session.expire_all()
    wanted = [o.id for o in outcomes if o.id is not None and o.outcome != FAILED]
    found = customers_by_id(session, business_id=business_id, customer_ids=wanted)
    return {customer_id: customer_view(customer) for customer_id, customer in found.items()}


def create_customers(session: Session, *, business: Business, elements: Sequence[Any]) -> dict[str, Any]:
    """`POST /businesses/{id}/customers/batch`: each customer is created or fails alone (partial success).

    Pocketflows' answer: `{"customers": [customer or null per input index], "errors": [{"message", "path"}]}`.
    """
    scope = Scope("customers", business.partner_id, business.id)
    records = _judge(elements, lambda element: _creation_payload("customers", element))
    outcomes = apply_records(session, scope=scope, seq=next_write_seq(session), records=records, create_only=True)
    views = _views(session, business.id, outcomes)
    customers: list[dict[str, Any] | None] = [None] * len(elements)
    errors: list[dict[str, Any]] = []
    for outcome in sorted(outcomes, key=lambda o: o.index):
        if outcome.outcome == CREATED and outcome.id in views:
            customers[outcome.index] = views[outcome.id]
        errors.extend({"message": e.message, "path": _path(outcome.index, e.path)} for e in outcome.errors)
    return {"customers": customers, "errors": errors}


def update_customers(session: Session, *, business: Business, elements: Sequence[Any]) -> list[dict[str, Any]]:
    """`POST /businesses/{id}/customers/batch_update`: every customer changes, or none does.

    All the records are applied in one call inside a savepoint; if any fails, the savepoint is rolled back and the
    problem lists every error of every record.
    """
    scope = Scope("customers", business.partner_id, business.id)
    # PostgreSQL cannot compare text holding NUL: such an id names no customer.
    ids = [e["id"] for e in elements if isinstance(e, dict) and isinstance(e.get("id"), str) and "\x00" not in e["id"]]
    current = customers_by_id(session, business_id=business.id, customer_ids=ids, for_update=True)

    def check(element: dict[str, Any]) -> Checked:
        customer_id = element.get("id")
        if customer_id is None:
            return [FieldError("missing_identifier", "give the id of the customer to update", "id")]
        if not isinstance(customer_id, str):
            return [FieldError("invalid_type", "input should be a valid string", "id")]
        customer = current.get(customer_id)
        if customer is None:
            return [FieldError("not_found", f"no customer with id {customer_id!r}", "id")]
        return _merged_payload("customers", customer, element)

    records = _judge(elements, check)
    seq = next_write_seq(session)
    with session.begin_nested():
        outcomes = apply_records(session, scope=scope, seq=seq, records=records)
        failed = [o for o in outcomes if o.outcome == FAILED]
        if failed:
            raise _batch_update_problem(failed, len(elements))  # leaving the block rolls the savepoint back
    views = _views(session, business.id, outcomes)
    return [views[o.id] for o in sorted(outcomes, key=lambda o: o.index) if o.id is not None]


def _batch_update_problem(failed: Sequence[RecordOutcome], total: int) -> DomainError:
    """422 listing every error; 409 when every error is a conflict with another record."""
    errors = [
        FieldError(e.code, e.message, _path(o.index, e.path))
        for o in sorted(failed, key=lambda o: o.index)
        for e in o.errors
    ]
    codes = {e.code for e in errors}
    conflict = all(RECORD_ERROR_STATUS.get(code) == 409 for code in codes)
    code = next(iter(codes)) if len(codes) == 1 else ("conflict" if conflict else "validation_error")
    return DomainError(
        code,
        f"{len(failed)} of the {total} customers cannot be updated, so none was changed; see errors.",
        409 if conflict else 422,
        errors,
    )
