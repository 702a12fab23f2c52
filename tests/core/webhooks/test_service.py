"""Webhook rules: URL checks, the signature, the retry schedule, and the outbox row written with the job's end."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.config import settings
from core.db import new_session
from core.errors import DomainError
from core.jobs.processing import cancel_job
from core.jobs.service import accept_batch
from core.models import WebhookDelivery
from core.webhooks.service import (
    delete_webhook,
    enqueue_job_finished,
    record_attempt,
    resolve_callback_url,
    retry_delay,
    set_webhook,
    signature,
    validate_url,
)
from tests.conftest import PartnerKey

HOOK = "https://hooks.example.com/pfsync"


def _finished_job(session: Session, partner_id: str, records: int = 3) -> str:
    """A job accepted and then cancelled before any worker saw it: it finishes in this transaction."""
    elements = [{"external_id": f"b{i}", "name": f"Business {i}"} for i in range(records)]
    accepted = accept_batch(session, partner_id=partner_id, kind="businesses", business_id=None, elements=elements)
    cancel_job(session, partner_id=partner_id, job_id=accepted.job.id)
    return accepted.job.id


def _deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/x", "must be an https URL"),
        ("https:///no-host", "must name a host"),
        ("https://user:pw@hooks.example.com/", "must not carry credentials"),
        ("https://hooks.example.com/#frag", "must not have a fragment"),
        ("https://hooks.example.com/a b", "must not contain spaces"),
        ("https://hooks.example.com:99999/", "is not a valid URL"),
        ("https://hooks.example.com/" + "a" * 2048, "at most 2048"),
        ("", "non-empty string"),
        (42, "non-empty string"),
    ],
)
def test_a_webhook_url_must_be_a_plain_https_url(url: object, message: str) -> None:
    with pytest.raises(DomainError) as caught:
        validate_url(url, path="url")
    assert caught.value.code == "invalid_url"
    assert caught.value.status == 422
    assert message in caught.value.errors[0].message
    assert caught.value.errors[0].path == "url"


def test_plain_http_is_allowed_only_when_https_is_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_require_https", False)
    assert validate_url("http://127.0.0.1:8080/hook", path="url") == "http://127.0.0.1:8080/hook"
    with pytest.raises(DomainError):
        validate_url("ftp://127.0.0.1/hook", path="url")


def test_signature_is_an_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"type":"sync_job.completed"}'
    header = signature("whsec_test", 1700000000, body)
    expected = hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_retry_delay_doubles_from_the_base_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 30.0)
    monkeypatch.setattr(settings, "webhook_retry_max_interval_seconds", 3600.0)
    for attempt, nominal in [(1, 30), (2, 60), (3, 120), (6, 960), (8, 3600), (60, 3600)]:
        assert 0.9 * nominal <= retry_delay(attempt) <= 1.1 * nominal


def test_a_finished_job_stores_its_delivery_in_the_same_transaction(session: Session, partner: PartnerKey) -> None:
    set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    job_id = _finished_job(session, partner.partner_id)
    [delivery] = _deliveries(session, job_id)
    assert (delivery.event, delivery.url, delivery.status, delivery.attempts) == (
        "sync_job.cancelled",
        HOOK,
        "pending",
        0,
    )
    assert delivery.id.startswith("whd_")
    event = orjson.loads(delivery.body)
    assert event["id"] == delivery.id
    assert event["type"] == "sync_job.cancelled"
    assert event["data"]["id"] == job_id
    assert event["data"]["status"] == "cancelled"
    assert event["data"]["counts"]["cancelled"] == 3
    # Until the job's transaction commits, nobody else sees the delivery: it rolls back with the job.
    with new_session() as other:
        assert other.get(WebhookDelivery, delivery.id) is None
    # A job finishes once, so its delivery is stored once.
    assert enqueue_job_finished(session, job_id=job_id) is None


def test_without_a_webhook_no_delivery_is_stored(session: Session, partner: PartnerKey) -> None:
    job_id = _finished_job(session, partner.partner_id)
    assert _deliveries(session, job_id) == []


def test_a_callback_url_must_share_the_webhook_origin(session: Session, partner: PartnerKey) -> None:
    with pytest.raises(DomainError) as caught:
        resolve_callback_url(session, partner_id=partner.partner_id, callback_url=HOOK + "/job-1")
    assert caught.value.code == "webhook_not_configured"
    set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    same_origin = "https://HOOKS.example.com:443/other/path?job=1"
    assert resolve_callback_url(session, partner_id=partner.partner_id, callback_url=same_origin) == same_origin
    for elsewhere in ("https://evil.example.com/pfsync", "https://hooks.example.com:8443/pfsync"):
        with pytest.raises(DomainError) as caught:
            resolve_callback_url(session, partner_id=partner.partner_id, callback_url=elsewhere)
        assert caught.value.code == "callback_url_not_allowed"
        assert caught.value.errors[0].path == "callback_url"


def test_the_job_callback_url_receives_its_delivery(session: Session, partner: PartnerKey) -> None:
    set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    elements = [{"external_id": "b1", "name": "One"}]
    callback = HOOK + "/batch-42"
    accepted = accept_batch(
        session,
        partner_id=partner.partner_id,
        kind="businesses",
        business_id=None,
        elements=elements,
        webhook_url=callback,
    )
    cancel_job(session, partner_id=partner.partner_id, job_id=accepted.job.id)
    assert [d.url for d in _deliveries(session, accepted.job.id)] == [callback]


def test_pending_deliveries_follow_the_webhook_or_end_when_it_leaves(session: Session, partner: PartnerKey) -> None:
    webhook, created = set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    assert created
    assert webhook.secret is not None
    assert webhook.secret.startswith("whsec_")
    job_id = _finished_job(session, partner.partner_id)
    moved, created = set_webhook(session, partner_id=partner.partner_id, url=HOOK + "/v2", rotate_secret=False)
    assert not created
    assert moved.secret is None  # shown only when created or rotated
    [delivery] = _deliveries(session, job_id)
    session.refresh(delivery)
    assert (delivery.url, delivery.status) == (HOOK + "/v2", "pending")
    rotated, _ = set_webhook(session, partner_id=partner.partner_id, url=HOOK + "/v2", rotate_secret=True)
    assert rotated.secret not in (None, webhook.secret)
    delete_webhook(session, partner_id=partner.partner_id)
    session.refresh(delivery)
    assert delivery.status == "failed"
    assert delivery.last_error == "the webhook was removed; not delivered"


def test_attempts_are_recorded_until_success_or_the_end_of_the_window(
    session: Session, partner: PartnerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    [delivery] = _deliveries(session, _finished_job(session, partner.partner_id))
    at = datetime.now(UTC)
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 60.0)
    status = record_attempt(
        session, delivery_id=delivery.id, attempt=1, at=at, status_code=500, error="HTTP 500", duration_ms=12
    )
    assert status == "pending"
    wait = session.execute(
        text("SELECT extract(epoch FROM next_attempt_at - now()) FROM webhook_deliveries WHERE id = :id"),
        {"id": delivery.id},
    ).scalar_one()
    assert 54 <= wait <= 66
    status = record_attempt(
        session, delivery_id=delivery.id, attempt=2, at=at, status_code=None, error="ConnectError", duration_ms=3
    )
    assert status == "pending"
    assert record_attempt(
        session, delivery_id=delivery.id, attempt=3, at=at, status_code=204, error=None, duration_ms=8
    ) == ("succeeded")
    session.refresh(delivery)
    assert delivery.next_attempt_at is None
    assert delivery.delivered_at is not None
    assert [(h["attempt"], h["status_code"], h["error"]) for h in delivery.history] == [
        (1, 500, "HTTP 500"),
        (2, None, "ConnectError"),
        (3, 204, None),
    ]
    # An ended delivery takes no more attempts.
    assert (
        record_attempt(
            session, delivery_id=delivery.id, attempt=4, at=at, status_code=500, error="HTTP 500", duration_ms=1
        )
        is None
    )


def test_a_delivery_gives_up_once_the_next_attempt_would_pass_the_window(
    session: Session, partner: PartnerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_webhook(session, partner_id=partner.partner_id, url=HOOK, rotate_secret=False)
    [delivery] = _deliveries(session, _finished_job(session, partner.partner_id))
    monkeypatch.setattr(settings, "webhook_retry_hours", 1.0)
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 2 * 3600.0)
    monkeypatch.setattr(settings, "webhook_retry_max_interval_seconds", 4 * 3600.0)
    status = record_attempt(
        session,
        delivery_id=delivery.id,
        attempt=1,
        at=datetime.now(UTC),
        status_code=503,
        error="HTTP 503",
        duration_ms=5,
    )
    assert status == "failed"
    session.refresh(delivery)
    assert delivery.next_attempt_at is None
    assert delivery.last_status_code == 503
