"""SQL for partners: the partners, their API keys and the idempotency keys of their requests.

Statements only; the rules (hashing, caching, expiry, conflicts) are in core/partners/service.py and
core/partners/idempotency.py. Nothing here commits; ORM writes flush.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, delete, func, select, text
from sqlalchemy.orm import Session

from core.models import ApiKey, IdempotencyKey, Partner


def insert_partner(session: Session, *, partner_id: str, name: str) -> Partner:
    """Store a new partner."""
    partner = Partner(id=partner_id, name=name)
    session.add(partner)
    session.flush()
    return partner


def insert_api_key(session: Session, *, key_id: str, partner_id: str, secret_hash: str) -> ApiKey:
    """Store a new API key of a partner, by the hash of its secret."""
    key = ApiKey(id=key_id, partner_id=partner_id, secret_hash=secret_hash)
    session.add(key)
    session.flush()
    return key


def active_key(session: Session, *, key_id: str) -> Row[str, str] | None:
    """The `partner_id` and `secret_hash` of an API key that is not revoked, or None."""
    return session.execute(
        select(ApiKey.partner_id, ApiKey.secret_hash).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).first()


def try_lock_idempotency_key(session: Session, *, partner_id: str, key: str) -> bool:
    """Take the transaction-scoped advisory lock of a partner's idempotency key; False when another holds it."""
    locked: bool = session.execute(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:p || ':' || :k, 7))"),
        {"p": partner_id, "k": key},
    ).scalar_one()
    return locked


def get_idempotency_key(session: Session, *, partner_id: str, key: str) -> IdempotencyKey | None:
    """The stored idempotency key of a partner, or None."""
    return session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key)
    )


def database_now(session: Session) -> datetime:
    """The database's `now()`: the start time of the current transaction."""
    now: datetime | None = session.scalar(select(func.now()))
    assert now is not None
    return now


def delete_idempotency_key(session: Session, *, partner_id: str, key: str) -> None:
    """Delete a partner's stored idempotency key."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key))


def insert_idempotency_key(
    session: Session,
    *,
    partner_id: str,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    status_code: int,
    response_headers: dict[str, str],
    response_body: bytes,
) -> None:
    """Store the completed response to a partner's idempotency key, completed now."""
    session.add(
        IdempotencyKey(
            partner_id=partner_id,
            key=key,
            method=method,
            path=path,
            request_hash=request_hash,
            status_code=status_code,
            response_headers=response_headers,
            response_body=response_body,
            completed_at=func.now(),
        )
    )
    session.flush()


def delete_idempotency_keys_older_than(session: Session, *, hours: int) -> int:
    """Delete every idempotency key created more than `hours` ago; returns how many."""
    result = session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => :h)"),
        {"h": hours},
    )
    return int(getattr(result, "rowcount", 0) or 0)
