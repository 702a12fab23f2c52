"""Partners and their API keys. Secrets are stored only as hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core import ids
from core.partners import repository

# Secrets are 256 random bits, so a fast hash is as strong as a slow one here (nothing to brute-force);
# a slow KDF would only make every request pay for it.
_AUTH_CACHE_SECONDS = 30.0
_cache: dict[tuple[str, str], tuple[str, float]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: the secret is shown once and never stored."""

    partner_id: str
    key_id: str
    secret: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_partner(session: Session, *, name: str) -> NewKey:
    """A new partner with one API key."""
    partner = repository.insert_partner(session, partner_id=ids.new_id(ids.PARTNER), name=name)
    return create_key(session, partner_id=partner.id)


def create_key(session: Session, *, partner_id: str) -> NewKey:
    """A new API key for a partner."""
    secret = "sk_" + secrets.token_urlsafe(32)
    key = repository.insert_api_key(
        session, key_id=ids.new_id(ids.API_KEY), partner_id=partner_id, secret_hash=hash_secret(secret)
    )
    return NewKey(partner_id=partner_id, key_id=key.id, secret=secret)


def cached_partner(*, key_id: str, secret: str) -> str | None:
    """The partner of a key id and secret checked successfully in the last 30 s, or None (no I/O)."""
    digest = hash_secret(secret)
    with _cache_lock:
        hit = _cache.get((key_id, digest))
    return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def authenticate(session: Session, *, key_id: str, secret: str) -> str | None:
    """The partner id a key id and secret belong to, or None. Successful checks are cached for 30 s."""
    cached = cached_partner(key_id=key_id, secret=secret)
    if cached is not None:
        return cached
    digest = hash_secret(secret)
    row = repository.active_key(session, key_id=key_id)
    # Compare even when the key is unknown, so timing does not tell whether a key id exists.
    stored = row.secret_hash if row is not None else hash_secret("")
    if not hmac.compare_digest(stored, digest) or row is None:
        return None
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[(key_id, digest)] = (row.partner_id, time.monotonic() + _AUTH_CACHE_SECONDS)
    return str(row.partner_id)
