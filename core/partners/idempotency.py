"""Idempotency keys (SPEC §1): the first response to a key is stored in the same transaction as its work."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from core.config import settings
from core.errors import DomainError
from core.partners import repository

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def fingerprint_hasher(method: str, path: str) -> hashlib._Hash:
    """A hash of the request line, to be fed the body: what makes two requests "the same request"."""
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", path.encode(), b"\0"):
        digest.update(part)
    return digest


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """The fingerprint of a request whose body is at hand."""
    digest = fingerprint_hasher(method, path)
    digest.update(body)
    return digest.hexdigest()


def claim(session: Session, *, partner_id: str, key: str, fingerprint: str) -> StoredResponse | None:
    """Claim `key` for this transaction, or return the response stored for it.

    Raises 409 while another request holds the key and 422 when it was used for a different request.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise DomainError("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters.", 400)
    locked = repository.try_lock_idempotency_key(session, partner_id=partner_id, key=key)
    if not locked:
        raise DomainError(
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still in progress; retry once it has finished.",
            409,
            headers={"Retry-After": "1"},
        )
    ttl = timedelta(hours=settings.idempotency_ttl_hours)
    row = repository.get_idempotency_key(session, partner_id=partner_id, key=key)
    if row is not None and repository.database_now(session) - row.created_at > ttl:
        repository.delete_idempotency_key(session, partner_id=partner_id, key=key)
        row = None
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise DomainError(
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request (method, path or body); "
            "use a new key for a new request.",
            422,
        )
    assert row.status_code is not None
    assert row.response_body is not None
    return StoredResponse(row.status_code, dict(row.response_headers or {}), bytes(row.response_body))


def store(
    session: Session,
    *,
    partner_id: str,
    key: str,
    method: str,
    path: str,
    fingerprint: str,
    response: StoredResponse,
) -> None:
    """Keep the response to replay it for the same key."""
    repository.insert_idempotency_key(
        session,
        partner_id=partner_id,
        key=key,
        method=method,
        path=path,
        request_hash=fingerprint,
        status_code=response.status,
        response_headers=response.headers,
        response_body=response.body,
    )


def purge_expired(session: Session) -> int:
    """Delete keys older than the retention; returns how many."""
    return repository.delete_idempotency_keys_older_than(session, hours=settings.idempotency_ttl_hours)


__all__ = ["StoredResponse", "claim", "purge_expired", "request_fingerprint", "store"]
