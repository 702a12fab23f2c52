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
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core import ids
from core.config import settings
from core.errors import DomainError, FieldError
from core.jobs.schemas import job_view
from core.models import Partner, SyncJob, WebhookDelivery
from core.records.service import rfc3339

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
    url = session.scalar(select(Partner.webhook_url).where(Partner.id == partner_id))
    if url is None:
        raise DomainError("not_found", "No webhook is configured; set one with PUT /webhook.", 404)
    return Webhook(url)


def set_webhook(session: Session, *, partner_id: str, url: str, rotate_secret: bool) -> tuple[Webhook, bool]:
    """Point the partner's webhook at `url`; a new one (or `rotate_secret`) gets a new signing secret.

    Returns the webhook and whether it was created. Pending deliveries follow the change: those addressed to the
    old URL go to the new one, and any other (a `callback_url`) whose origin is no longer the webhook's ends
    `failed`.
    """
    partner = session.scalar(select(Partner).where(Partner.id == partner_id).with_for_update())
    assert partner is not None
    created = partner.webhook_secret is None
    old_url = partner.webhook_url
    secret = SECRET_PREFIX + secrets.token_urlsafe(32) if created or rotate_secret else None
    partner.webhook_url = url
    if secret is not None:
        partner.webhook_secret = secret
    session.flush()
    if old_url is not None and old_url != url:
        session.execute(
            text(
                "UPDATE webhook_deliveries SET url = :new, updated_at = now() WHERE status = 'pending' AND url = :old "
                "AND job_id IN (SELECT id FROM sync_jobs WHERE partner_id = :p)"
            ),
            {"new": url, "old": old_url, "p": partner_id},
        )
        moved = [
            (row.id, row.url)
            for row in session.execute(
                text(
                    "SELECT d.id, d.url FROM webhook_deliveries d JOIN sync_jobs j ON j.id = d.job_id "
                    "WHERE d.status = 'pending' AND j.partner_id = :p"
                ),
                {"p": partner_id},
            )
        ]
        stale = [delivery_id for delivery_id, target in moved if _origin(target) != _origin(url)]
        _end_pending(session, stale, "the webhook moved to another origin; not delivered")
    return Webhook(url, secret), created


def delete_webhook(session: Session, *, partner_id: str) -> None:
    """Remove the partner's webhook and its secret; pending deliveries end `failed`."""
    get_webhook(session, partner_id=partner_id)
    session.execute(
        text("UPDATE partners SET webhook_url = NULL, webhook_secret = NULL WHERE id = :p"), {"p": partner_id}
    )
    pending = session.execute(
        text(
            "SELECT d.id FROM webhook_deliveries d JOIN sync_jobs j ON j.id = d.job_id "
            "WHERE d.status = 'pending' AND j.partner_id = :p"
        ),
        {"p": partner_id},
    ).scalars()
    _end_pending(session, list(pending), "the webhook was removed; not delivered")


def _end_pending(session: Session, delivery_ids: list[str], reason: str) -> None:
    if delivery_ids:
        session.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = :e, "
                "updated_at = now() WHERE id = ANY(:ids) AND status = 'pending'"
            ),
            {"ids": delivery_ids, "e": reason},
        )


def resolve_callback_url(session: Session, *, partner_id: str, callback_url: str | None) -> str | None:
    """A batch's `callback_url`, checked: the partner has a webhook (its secret signs) and it shares its origin."""
    if callback_url is None:
        return None
    url = validate_url(callback_url, path="callback_url")
    configured = session.scalar(select(Partner.webhook_url).where(Partner.id == partner_id))
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
    row = session.execute(
        text(
            "SELECT j.webhook_url AS callback_url, p.webhook_url AS url FROM sync_jobs j "
            "JOIN partners p ON p.id = j.partner_id WHERE j.id = :j AND p.webhook_secret IS NOT NULL"
        ),
        {"j": job_id},
    ).one_or_none()
    if row is None or row.url is None:
        return None
    # A callback_url was checked at acceptance; if the webhook has since moved to another origin, the webhook wins.
    url = row.callback_url if row.callback_url and _origin(row.callback_url) == _origin(row.url) else row.url
    job = session.get(SyncJob, job_id, populate_existing=True)
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
    inserted = session.execute(
        text(
            "INSERT INTO webhook_deliveries (id, job_id, event, url, body, next_attempt_at) "
            "VALUES (:id, :j, :e, :u, :b, now()) ON CONFLICT (job_id, event) DO NOTHING RETURNING id"
        ),
        {"id": delivery_id, "j": job_id, "e": event, "u": url, "b": body},
    ).scalar_one_or_none()
    return inserted


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
    rows = session.execute(
        text(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(), updated_at = now(), "
            "next_attempt_at = now() + make_interval(secs => :lease) "
            "FROM sync_jobs j JOIN partners p ON p.id = j.partner_id "
            "WHERE j.id = d.job_id AND d.id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' "
            "  AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING d.id, d.job_id, j.partner_id, j.request_id, d.event, d.url, d.body, d.attempts, "
            "p.webhook_secret"
        ),
        {"lease": lease, "n": limit},
    ).all()
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
    status: str | None = session.execute(
        text(
            "UPDATE webhook_deliveries SET history = history || CAST(:entry AS jsonb), updated_at = now(), "
            "last_status_code = :code, last_error = :error, "
            "status = CASE WHEN :ok THEN 'succeeded' "
            "  WHEN now() + make_interval(secs => :delay) > created_at + make_interval(secs => :window) "
            "  THEN 'failed' ELSE 'pending' END, "
            "delivered_at = CASE WHEN :ok THEN now() END, "
            "next_attempt_at = CASE WHEN :ok THEN NULL "
            "  WHEN now() + make_interval(secs => :delay) > created_at + make_interval(secs => :window) THEN NULL "
            "  ELSE now() + make_interval(secs => :delay) END "
            "WHERE id = :id AND status = 'pending' RETURNING status"
        ),
        {
            "entry": orjson.dumps([entry]).decode(),
            "code": status_code,
            "error": error,
            "ok": succeeded,
            "delay": retry_delay(attempt),
            "window": settings.webhook_retry_hours * 3600,
            "id": delivery_id,
        },
    ).scalar_one_or_none()
    return status


def end_without_attempt(session: Session, *, delivery_id: str, reason: str) -> None:
    """End a claimed delivery that cannot be sent (its webhook was removed meanwhile); the claim is not an
    attempt."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = :e, "
            "attempts = greatest(attempts - 1, 0), updated_at = now() WHERE id = :id AND status = 'pending'"
        ),
        {"id": delivery_id, "e": reason},
    )


def list_deliveries(
    session: Session, *, job_id: str, limit: int, starting_after: str | None
) -> tuple[list[WebhookDelivery], bool]:
    """A job's deliveries, oldest first (the caller has checked the job is the partner's)."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    if starting_after:
        query = query.where(WebhookDelivery.id > starting_after)
    rows = list(session.scalars(query.order_by(WebhookDelivery.id).limit(limit + 1)))
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
