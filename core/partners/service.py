"""Partners and their API keys. Secrets are stored only as hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from core import ids
from core.errors import DomainError, not_found
from core.models import ApiKey, Partner
from core.partners import repository
from core.partners.budgets import Budget, budget_of

# Secrets are 256 random bits, so a fast hash is as strong as a slow one here (nothing to brute-force);
# a slow KDF would only make every request pay for it. A successful check is remembered for a second: a revoked key
# answers 401 within 1 s on every process (SPEC §8), for the cost of one query a second per key and process.
_AUTH_CACHE_SECONDS = 1.0
_cache: dict[tuple[str, str], tuple[Caller, float]] = {}
_cache_lock = threading.Lock()
# When this process last recorded each key's use: `last_used_at` is kept to the minute, not written per request.
_TOUCH_SECONDS = 60.0
_touched: dict[str, float] = {}


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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who signed a request: the partner and the request budget it spends (SPEC §8)."""

    partner_id: str
    budget: Budget


def cached_caller(*, key_id: str, secret: str) -> Caller | None:
    """The caller of a key id and secret checked successfully in the last second, or None (no I/O)."""
    digest = hash_secret(secret)
    with _cache_lock:
        hit = _cache.get((key_id, digest))
    return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def authenticate(session: Session, *, key_id: str, secret: str) -> Caller | None:
    """The caller a key id and secret belong to, or None. Successful checks are cached for a second (so a
    revocation, or a new budget, holds within a second), and the key's `last_used_at` recorded at most once a
    minute per process."""
    cached = cached_caller(key_id=key_id, secret=secret)
    if cached is not None:
        return cached
    digest = hash_secret(secret)
    row = repository.active_key(session, key_id=key_id)
    # Compare even when the key is unknown, so timing does not tell whether a key id exists.
    stored = row.secret_hash if row is not None else hash_secret("")
    if not hmac.compare_digest(stored, digest) or row is None:
        return None
    caller = Caller(partner_id=str(row.partner_id), budget=budget_of(row.rate_limit_per_second, row.rate_limit_burst))
    now = time.monotonic()
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[(key_id, digest)] = (caller, now + _AUTH_CACHE_SECONDS)
        due = _touched.get(key_id, 0.0) + _TOUCH_SECONDS <= now
        if due:
            if len(_touched) > 100_000:
                _touched.clear()
            _touched[key_id] = now
    if due and not repository.touch_key(session, key_id=key_id):
        with _cache_lock:  # busy with writes right now: try again on the next check
            _touched.pop(key_id, None)
    return caller


def key_revoked() -> DomainError:
    """The 401 of a write whose API key was revoked before it could be applied."""
    return DomainError(
        "unauthorized", "This API key was revoked.", 401, headers={"WWW-Authenticate": 'Basic realm="pfsync"'}
    )


def require_live_key(session: Session, *, key_id: str) -> None:
    """401 unless the key is still live, holding it for the transaction (see `repository.hold_live_key`): called
    by every write, so that no write is applied with a key once its revocation has committed."""
    if not repository.hold_live_key(session, key_id=key_id):
        raise key_revoked()


def create_key_for(session: Session, *, partner_id: str) -> NewKey:
    """Another live key for an existing partner (rotate without downtime: create, switch, revoke the old one)."""
    if repository.get_partner(session, partner_id=partner_id) is None:
        raise not_found("partner")
    return create_key(session, partner_id=partner_id)


def revoke_key(session: Session, *, key_id: str) -> ApiKey:
    """Revoke a key; once this commits, no write is applied with it (and it answers 401 within 1 s)."""
    key = None if "\x00" in key_id else repository.revoke_key(session, key_id=key_id)
    if key is None:
        raise not_found("API key")
    return key


def list_partners(session: Session) -> list[Partner]:
    return repository.list_partners(session)


def partners_page(session: Session, *, starting_after: str | None, limit: int) -> tuple[list[Partner], bool]:
    """A page of partners, oldest first; whether there are more."""
    rows = repository.partners_after(session, starting_after=starting_after, limit=limit + 1)
    return rows[:limit], len(rows) > limit


def partner_choices(session: Session) -> list[tuple[str, str]]:
    """(id, name) of every partner, by name: the console's partner filter."""
    return [(row[0], row[1]) for row in repository.partner_names(session)]


def key_totals(session: Session, *, partner_ids: list[str]) -> dict[str, tuple[int, datetime | None]]:
    """Per partner: how many live keys it has, and when one of its keys was last used."""
    return {row[0]: (int(row[1]), row[2]) for row in repository.key_totals(session, partner_ids=partner_ids)}


def find_key(session: Session, *, key_id: str) -> ApiKey | None:
    """An API key by id, revoked or not, or None."""
    return None if "\x00" in key_id else repository.get_key(session, key_id=key_id)


def get_partner(session: Session, *, partner_id: str) -> Partner:
    """The partner, or `not_found`."""
    partner = None if "\x00" in partner_id else repository.get_partner(session, partner_id=partner_id)
    if partner is None:
        raise not_found("partner")
    return partner


def list_keys(session: Session, *, partner_id: str) -> list[ApiKey]:
    if repository.get_partner(session, partner_id=partner_id) is None:
        raise not_found("partner")
    return repository.list_keys(session, partner_id=partner_id)


def set_budget(session: Session, *, partner_id: str, per_second: int | None, burst: int | None) -> Partner:
    """Give a partner its own request budget, or (both None) the service's default again; effective within a
    second on every API process."""
    for name, value in (("per_second", per_second), ("burst", burst)):
        if value is not None and value < 0:
            raise DomainError("invalid_budget", f"{name} must be 0 or more, not {value}.", 422)
    if per_second is None and burst is not None:
        raise DomainError("invalid_budget", "A burst needs a rate: give per_second too.", 422)
    partner = repository.set_budget(session, partner_id=partner_id, per_second=per_second, burst=burst)
    if partner is None:
        raise not_found("partner")
    return partner


def budget_for(partner: Partner) -> Budget:
    """The request budget a partner spends: its own, else the service's default."""
    return budget_of(partner.rate_limit_per_second, partner.rate_limit_burst)
