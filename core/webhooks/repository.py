"""SQL for webhooks: the partner's endpoint and secret, and the outbox of deliveries.

Statements only: which delivery goes where, when it is retried and when it ends are decided in
core/webhooks/service.py. Nothing here commits; writes through the ORM flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Row, select, text
from sqlalchemy.orm import Session

from core.models import Partner, SyncJob, WebhookDelivery


def webhook_url(session: Session, *, partner_id: str) -> str | None:
    """The partner's configured webhook URL, or None."""
    return session.scalar(select(Partner.webhook_url).where(Partner.id == partner_id))


def lock_partner(session: Session, *, partner_id: str) -> Partner | None:
    """The partner, its row locked (FOR UPDATE) until the transaction ends."""
    return session.scalar(select(Partner).where(Partner.id == partner_id).with_for_update())


def save_webhook(session: Session, *, partner: Partner, url: str, secret: str | None) -> None:
    """Point a (locked) partner's webhook at `url`; a `secret` replaces the signing secret, None keeps it."""
    partner.webhook_url = url
    if secret is not None:
        partner.webhook_secret = secret
    session.flush()


def clear_webhook(session: Session, *, partner_id: str) -> None:
    """Remove the partner's webhook URL and secret."""
    session.execute(
        text("UPDATE partners SET webhook_url = NULL, webhook_secret = NULL WHERE id = :p"), {"p": partner_id}
    )


def readdress_pending(session: Session, *, partner_id: str, old_url: str, new_url: str) -> None:
    """Send the partner's pending deliveries addressed to `old_url` to `new_url` instead."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET url = :new, updated_at = now() WHERE status = 'pending' AND url = :old "
            "AND job_id IN (SELECT id FROM sync_jobs WHERE partner_id = :p)"
        ),
        {"new": new_url, "old": old_url, "p": partner_id},
    )


def pending_targets(session: Session, *, partner_id: str) -> list[tuple[str, str]]:
    """The id and URL of each pending delivery of the partner's jobs."""
    return [
        (row.id, row.url)
        for row in session.execute(
            text(
                "SELECT d.id, d.url FROM webhook_deliveries d JOIN sync_jobs j ON j.id = d.job_id "
                "WHERE d.status = 'pending' AND j.partner_id = :p"
            ),
            {"p": partner_id},
        )
    ]


def pending_ids(session: Session, *, partner_id: str) -> list[str]:
    """The ids of the pending deliveries of the partner's jobs."""
    pending = session.execute(
        text(
            "SELECT d.id FROM webhook_deliveries d JOIN sync_jobs j ON j.id = d.job_id "
            "WHERE d.status = 'pending' AND j.partner_id = :p"
        ),
        {"p": partner_id},
    ).scalars()
    return list(pending)


def fail_pending(session: Session, *, delivery_ids: list[str], reason: str) -> None:
    """End the given deliveries that are still pending as `failed`, with `reason` as their last error."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = :e, "
            "updated_at = now() WHERE id = ANY(:ids) AND status = 'pending'"
        ),
        {"ids": delivery_ids, "e": reason},
    )


def job_targets(session: Session, *, job_id: str) -> tuple[str | None, str | None] | None:
    """The job's `callback_url` and its partner's webhook URL, or None when the partner has no signing secret."""
    row = session.execute(
        text(
            "SELECT j.webhook_url AS callback_url, p.webhook_url AS url FROM sync_jobs j "
            "JOIN partners p ON p.id = j.partner_id WHERE j.id = :j AND p.webhook_secret IS NOT NULL"
        ),
        {"j": job_id},
    ).one_or_none()
    return None if row is None else (row.callback_url, row.url)


def reload_job(session: Session, *, job_id: str) -> SyncJob | None:
    """The job as the database has it now, overwriting any state the session holds."""
    return session.get(SyncJob, job_id, populate_existing=True)


def insert_delivery(
    session: Session, *, delivery_id: str, job_id: str, event: str, url: str, body: bytes
) -> str | None:
    """Store a delivery due now; returns its id, or None when the job already has one for `event`."""
    inserted: str | None = session.execute(
        text(
            "INSERT INTO webhook_deliveries (id, job_id, event, url, body, next_attempt_at) "
            "VALUES (:id, :j, :e, :u, :b, now()) ON CONFLICT (job_id, event) DO NOTHING RETURNING id"
        ),
        {"id": delivery_id, "j": job_id, "e": event, "u": url, "b": body},
    ).scalar_one_or_none()
    return inserted


def claim_due(session: Session, *, limit: int, lease_seconds: float) -> Sequence[Row[*tuple[Any, ...]]]:
    """Count an attempt at up to `limit` due deliveries (skipping those locked) and lease them for
    `lease_seconds`; returns each with its job's partner, request id and the partner's secret."""
    return session.execute(
        text(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(), updated_at = now(), "
            "next_attempt_at = now() + make_interval(secs => :lease) "
            "FROM sync_jobs j JOIN partners p ON p.id = j.partner_id "
            "WHERE j.id = d.job_id AND d.id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' "
            "  AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING d.id, d.job_id, j.partner_id, j.request_id, d.event, d.url, d.body, d.attempts, "
            "p.webhook_secret"
        ),
        {"lease": lease_seconds, "n": limit},
    ).all()


def record_attempt(
    session: Session,
    *,
    delivery_id: str,
    entry: dict[str, Any],
    status_code: int | None,
    error: str | None,
    succeeded: bool,
    delay_seconds: float,
    window_seconds: float,
) -> str | None:
    """Append `entry` to a pending delivery's history and end it (`succeeded`, or `failed` once the next attempt,
    `delay_seconds` away, would fall past `window_seconds` after its creation) or schedule the next attempt.
    Returns the new status, or None when the delivery was no longer pending."""
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
            "delay": delay_seconds,
            "window": window_seconds,
            "id": delivery_id,
        },
    ).scalar_one_or_none()
    return status


def fail_unattempted(session: Session, *, delivery_id: str, reason: str) -> None:
    """End a pending delivery as `failed` and give back the attempt its claim counted."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = :e, "
            "attempts = greatest(attempts - 1, 0), updated_at = now() WHERE id = :id AND status = 'pending'"
        ),
        {"id": delivery_id, "e": reason},
    )


def list_deliveries(session: Session, *, job_id: str, limit: int, starting_after: str | None) -> list[WebhookDelivery]:
    """Up to `limit` deliveries of a job in id order, after `starting_after` when given."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    if starting_after:
        query = query.where(WebhookDelivery.id > starting_after)
    return list(session.scalars(query.order_by(WebhookDelivery.id).limit(limit)))
