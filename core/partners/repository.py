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


def active_key(session: Session, *, key_id: str) -> Row[str, str, int | None, int | None] | None:
    """The `partner_id` and `secret_hash` of an API key that is not revoked, with its partner's own request
    budget (`rate_limit_per_second`, `rate_limit_burst`), or None."""
    return session.execute(
        select(ApiKey.partner_id, ApiKey.secret_hash, Partner.rate_limit_per_second, Partner.rate_limit_burst)
        .join(Partner, Partner.id == ApiKey.partner_id)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).first()


def hold_live_key(session: Session, *, key_id: str) -> bool:
    """Share-lock the key's row for the transaction if it is not revoked: a revocation waits for the writes that
    hold it, and every write after the revocation commits finds the key revoked. False if revoked (or unknown)."""
    found = session.execute(
        text("SELECT 1 FROM api_keys WHERE id = :k AND revoked_at IS NULL FOR SHARE"), {"k": key_id}
    ).first()
    return found is not None


# The advisory lock a job's chunk holds (shared) while it is applied, and a revocation takes (exclusive) first: a
# lock of its own rather than the key's row, which a long batch would otherwise keep from its once-a-minute
# `last_used_at` (`touch_key` skips a locked row).
_KEY_JOBS_LOCK = "hashtextextended(:k, 17)"


def hold_key_for_job(session: Session, *, key_id: str) -> bool:
    """Whether the key is live, holding it so for the transaction: a revocation waits for the chunk being applied,
    and a chunk that starts after the revocation has committed finds the key revoked. False if revoked."""
    session.execute(text(f"SELECT pg_advisory_xact_lock_shared({_KEY_JOBS_LOCK})"), {"k": key_id})
    live = session.execute(text("SELECT revoked_at IS NULL FROM api_keys WHERE id = :k"), {"k": key_id}).scalar()
    return bool(live)


def revoke_key(session: Session, *, key_id: str) -> ApiKey | None:
    """Mark a key revoked now (once: a second revocation keeps the first time); the key, or None if unknown. Waits
    for the writes that hold the key (`hold_live_key`) and the chunks being applied for its jobs
    (`hold_key_for_job`)."""
    session.execute(text(f"SELECT pg_advisory_xact_lock({_KEY_JOBS_LOCK})"), {"k": key_id})
    session.execute(text("UPDATE api_keys SET revoked_at = now() WHERE id = :k AND revoked_at IS NULL"), {"k": key_id})
    return session.get(ApiKey, key_id, populate_existing=True)


def touch_key(session: Session, *, key_id: str) -> bool:
    """Record that the key was used now, unless that was recorded less than a minute ago. Never waits: while
    writes hold the key's row (`hold_live_key`), it does nothing and answers False."""
    locked = session.execute(
        text("SELECT 1 FROM api_keys WHERE id = :k FOR NO KEY UPDATE SKIP LOCKED"), {"k": key_id}
    ).first()
    if locked is None:
        return False
    session.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE id = :k "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
        ),
        {"k": key_id},
    )
    return True


def list_partners(session: Session) -> list[Partner]:
    return list(session.scalars(select(Partner).order_by(Partner.id)))


def partners_after(session: Session, *, starting_after: str | None, limit: int) -> list[Partner]:
    """Up to `limit` partners in id order (oldest first), after `starting_after`."""
    query = select(Partner).order_by(Partner.id).limit(limit)
    if starting_after:
        query = query.where(Partner.id > starting_after)
    return list(session.scalars(query))


def partner_names(session: Session) -> list[Row[str, str]]:
    """(id, name) of every partner, by name."""
    return list(session.execute(select(Partner.id, Partner.name).order_by(Partner.name, Partner.id)).all())


def key_totals(session: Session, *, partner_ids: list[str]) -> list[Row[str, int, datetime | None]]:
    """Per partner of `partner_ids`: (partner_id, live keys, when any of its keys was last used)."""
    return list(
        session.execute(
            select(ApiKey.partner_id, func.count().filter(ApiKey.revoked_at.is_(None)), func.max(ApiKey.last_used_at))
            .where(ApiKey.partner_id.in_(partner_ids))
            .group_by(ApiKey.partner_id)
        ).all()
    )


def get_key(session: Session, *, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def get_partner(session: Session, *, partner_id: str) -> Partner | None:
    return session.get(Partner, partner_id)


def set_budget(session: Session, *, partner_id: str, per_second: int | None, burst: int | None) -> Partner | None:
    """Set a partner's own request budget (None: the default's); the partner, or None if unknown."""
    partner = session.get(Partner, partner_id)
    if partner is not None:
        partner.rate_limit_per_second = per_second
        partner.rate_limit_burst = burst
        session.flush()
    return partner


def list_keys(session: Session, *, partner_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.partner_id == partner_id).order_by(ApiKey.id)))


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
