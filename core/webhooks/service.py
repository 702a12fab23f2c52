"""Completion webhooks: the partner's endpoint, the outbox of deliveries, their signature and retry schedule.

The transaction that finishes a job also stores its delivery (an outbox row), so a notification is never lost and
never sent for work that rolled back. The scheduler process claims due deliveries, POSTs them
(workers/webhooks.py) and records every attempt here; a failed attempt is retried with exponential backoff until
PFSYNC_WEBHOOK_RETRY_HOURS after the job finished.

Deliveries go only to the partner's configured URL, or to a job's `callback_url` on that URL's origin (scheme,
host and port): a key that leaks, or a bug, cannot point signed job data at a host the partner never registered.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy.orm import Session

from core import ids
from core.config import settings
from core.errors import DomainError, FieldError
from core.jobs.schemas import job_view
from core.models import WebhookDelivery
from core.records.service import rfc3339
from core.webhooks import repository

SIGNATURE_HEADER = "Pocketflows-Signature"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


class DeliveryStatus(StrEnum):
    """A delivery is `pending` (due, or waiting for its retry) until it `succeeded` or `failed` for good."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


PENDING, SUCCEEDED, FAILED = (status.value for status in DeliveryStatus)
# A claimed attempt is given this long beyond the request timeout before another scheduler may try again.
_LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Webhook:
    """A partner's endpoint; `secret` is set only when it was just created or rotated (it is shown once)."""

    url: str
    secret: str | None = None

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = {"object": "webhook", "url": self.url}
        if self.secret is not None:
            body["secret"] = self.secret
        return body


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for one attempt, with what it takes to sign and send it."""

    id: str
    job_id: str
    partner_id: str
    request_id: str | None
    event: str
    url: str
    body: bytes
    attempt: int
    secret: str | None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"https": 443, "http": 80}.get(scheme)


def validate_url(url: Any, *, path: str) -> str:
    """A URL deliveries may be POSTed to, or a 422 naming what is wrong with it."""

    def invalid(message: str) -> DomainError:
        return DomainError("invalid_url", f"{path}: {message}", 422, [FieldError("invalid_url", message, path)])

    if not isinstance(url, str) or not url:
        raise invalid("must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise invalid("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (an out-of-range port raises here)
    except ValueError:
        raise invalid("is not a valid URL") from None
    allowed = ("https",) if settings.webhook_require_https else ("https", "http")
    if parts.scheme.lower() not in allowed:
        raise invalid("must be an https URL" if settings.webhook_require_https else "must be an http(s) URL")
    if not parts.hostname:
        raise invalid("must name a host")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not carry credentials; authenticate deliveries by their signature")
    if parts.fragment:
        raise invalid("must not have a fragment")
    return url


def parse_webhook_body(body: dict[str, Any]) -> tuple[str, bool]:
    """The `url` and `rotate_secret` of a PUT /webhook body."""
    unknown = sorted(set(body) - {"url", "rotate_secret"})
    if unknown:
        errors = [FieldError("unknown_field", "is not a property of a webhook", name) for name in unknown]
        raise DomainError("unknown_field", "Unknown field(s): " + ", ".join(unknown) + ".", 422, errors)
    if "url" not in body:
        raise DomainError("validation_error", "url: is required", 422, [FieldError("required", "is required", "url")])
    rotate = body.get("rotate_secret", False)
    if not isinstance(rotate, bool):
        error = FieldError("invalid_type", "must be a boolean", "rotate_secret")
        raise DomainError("validation_error", "rotate_secret: must be a boolean", 422, [error])
    return validate_url(body["url"], path="url"), rotate


def get_webhook(session: Session, *, partner_id: str) -> Webhook:
    """The partner's webhook, or `not_found` when none is configured."""
    url = repository.webhook_url(session, partner_id=partner_id)
    if url is None:
        raise DomainError("not_found", "No webhook is configured; set one with PUT /webhook.", 404)
    return Webhook(url)


def set_webhook(session: Session, *, partner_id: str, url: str, rotate_secret: bool) -> tuple[Webhook, bool]:
    """Point the partner's webhook at `url`; a new one (or `rotate_secret`) gets a new signing secret.

    Returns the webhook and whether it was created. Pending deliveries follow the change: those addressed to the
    old URL go to the new one, and any other (a `callback_url`) whose origin is no longer the webhook's ends
    `failed`.
    """
    partner = repository.lock_partner(session, partner_id=partner_id)
    assert partner is not None
    created = partner.webhook_secret is None
    old_url = partner.webhook_url
    secret = SECRET_PREFIX + secrets.token_urlsafe(32) if created or rotate_secret else None
    repository.save_webhook(session, partner=partner, url=url, secret=secret)
    if old_url is not None and old_url != url:
        repository.readdress_pending(session, partner_id=partner_id, old_url=old_url, new_url=url)
        moved = repository.pending_targets(session, partner_id=partner_id)
        stale = [delivery_id for delivery_id, target in moved if _origin(target) != _origin(url)]
        _end_pending(session, stale, "the webhook moved to another origin; not delivered")
    return Webhook(url, secret), created


def delete_webhook(session: Session, *, partner_id: str) -> None:
    """Remove the partner's webhook and its secret; pending deliveries end `failed`."""
    get_webhook(session, partner_id=partner_id)
    repository.clear_webhook(session, partner_id=partner_id)
    pending = repository.pending_ids(session, partner_id=partner_id)
    _end_pending(session, pending, "the webhook was removed; not delivered")


def _end_pending(session: Session, delivery_ids: list[str], reason: str) -> None:
    if delivery_ids:
        repository.fail_pending(session, delivery_ids=delivery_ids, reason=reason)


def resolve_callback_url(session: Session, *, partner_id: str, callback_url: str | None) -> str | None:
    """A batch's `callback_url`, checked: the partner has a webhook (its secret signs) and it shares its origin."""
    if callback_url is None:
        return None
    url = validate_url(callback_url, path="callback_url")
    configured = repository.webhook_url(session, partner_id=partner_id)
    if configured is None:
        raise DomainError(
            "webhook_not_configured",
            "callback_url needs a webhook: set one with PUT /webhook first (its secret signs every delivery).",
            422,
            [FieldError("webhook_not_configured", "no webhook is configured", "callback_url")],
        )
    if _origin(url) != _origin(configured):
        message = "must be on the origin (scheme, host and port) of your webhook URL"
        raise DomainError(
            "callback_url_not_allowed",
            f"callback_url {message}, {configured}.",
            422,
            [FieldError("callback_url_not_allowed", message, "callback_url")],
        )
    return url


def enqueue_job_finished(session: Session, *, job_id: str) -> str | None:
    """Store the delivery announcing that a job finished, if its partner has a webhook; in the caller's
    transaction, the one that finished the job. Returns the delivery id."""
    targets = repository.job_targets(session, job_id=job_id)
    if targets is None:
        return None
    callback_url, webhook_url = targets
    if webhook_url is None:
        return None
    # A callback_url was checked at acceptance; if the webhook has since moved to another origin, the webhook wins.
    url = callback_url if callback_url and _origin(callback_url) == _origin(webhook_url) else webhook_url
    job = repository.reload_job(session, job_id=job_id)
    assert job is not None
    assert job.finished_at is not None
    delivery_id = ids.new_id(ids.WEBHOOK_DELIVERY)
    event = f"sync_job.{job.status}"
    body = orjson.dumps(
        {
            "id": delivery_id,
            "object": "event",
            "type": event,
            "created_at": rfc3339(job.finished_at),
            "data": job_view(job),
        }
    )
    return repository.insert_delivery(session, delivery_id=delivery_id, job_id=job_id, event=event, url=url, body=body)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Pocketflows-Signature` header: `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling from the base, capped, with
    ±10 % jitter so receivers that fail together are not retried together."""
    base = settings.webhook_retry_base_seconds * 2.0 ** min(attempt - 1, 40)
    return min(base, settings.webhook_retry_max_interval_seconds) * random.uniform(0.9, 1.1)


def claim_due(session: Session, *, limit: int) -> list[DueDelivery]:
    """Claim up to `limit` deliveries whose next attempt is due: count the attempt and lease it, so no other
    scheduler tries it meanwhile. The caller commits before sending."""
    lease = settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS
    rows = repository.claim_due(session, limit=limit, lease_seconds=lease)
    return [
        DueDelivery(
            id=r.id,
            job_id=r.job_id,
            partner_id=r.partner_id,
            request_id=r.request_id,
            event=r.event,
            url=r.url,
            body=bytes(r.body),
            attempt=r.attempts,
            secret=r.webhook_secret,
        )
        for r in rows
    ]


def record_attempt(
    session: Session,
    *,
    delivery_id: str,
    attempt: int,
    at: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
) -> str | None:
    """Record one attempt (a 2xx answer is a success) and schedule the next one, or give up once the next would
    fall past the retry window. Returns the delivery's new status (None if it had already ended)."""
    succeeded = error is None and status_code is not None and 200 <= status_code < 300
    entry = {
        "attempt": attempt,
        "at": rfc3339(at),
        "status_code": status_code,
        "error": error,
        "duration_ms": duration_ms,
    }
    return repository.record_attempt(
        session,
        delivery_id=delivery_id,
        entry=entry,
        status_code=status_code,
        error=error,
        succeeded=succeeded,
        delay_seconds=retry_delay(attempt),
        window_seconds=settings.webhook_retry_hours * 3600,
    )


def end_without_attempt(session: Session, *, delivery_id: str, reason: str) -> None:
    """End a claimed delivery that cannot be sent (its webhook was removed meanwhile); the claim is not an
    attempt."""
    repository.fail_unattempted(session, delivery_id=delivery_id, reason=reason)


def list_deliveries(
    session: Session, *, job_id: str, limit: int, starting_after: str | None
) -> tuple[list[WebhookDelivery], bool]:
    """A job's deliveries, oldest first (the caller has checked the job is the partner's)."""
    rows = repository.list_deliveries(session, job_id=job_id, limit=limit + 1, starting_after=starting_after)
    return rows[:limit], len(rows) > limit


def delivery_view(d: WebhookDelivery) -> dict[str, Any]:
    """A delivery as the API shows it: where it goes, how it went, every attempt."""

    def ts(value: datetime | None) -> str | None:
        return rfc3339(value) if value else None

    return {
        "id": d.id,
        "object": "webhook_delivery",
        "job_id": d.job_id,
        "event": d.event,
        "url": d.url,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": ts(d.next_attempt_at),
        "last_attempt_at": ts(d.last_attempt_at),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "history": d.history,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
        "delivered_at": ts(d.delivered_at),
    }
