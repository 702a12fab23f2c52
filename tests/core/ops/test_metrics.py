"""Metrics read from the sources of truth: the purge keeps the records counter whole; queue depth from Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings
from core.jobs.processing import cancel_job
from core.jobs.service import accept_batch, purge_expired_jobs
from core.ops.metrics import JobMetricsCollector, read_broker
from tests.conftest import REDIS_URL, PartnerKey


def _purged(session: Session, *, dry_run: bool = False) -> dict[str, int]:
    query = text("SELECT outcome, records FROM purged_record_counts WHERE dry_run = :d")
    return {o: int(n) for o, n in session.execute(query, {"d": dry_run})}


def test_purging_a_job_moves_its_record_counts_instead_of_losing_them(session: Session, partner: PartnerKey) -> None:
    elements = [{"external_id": f"b{i}", "name": f"Business {i}"} for i in range(4)] + ["not an object"]
    accepted = accept_batch(
        session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=elements
    )
    cancel_job(session, partner_id=partner.partner_id, job_id=accepted.job.id)
    before = _purged(session)
    session.execute(
        text("UPDATE sync_jobs SET finished_at = now() - make_interval(days => :d + 1) WHERE id = :j"),
        {"d": settings.job_retention_days, "j": accepted.job.id},
    )
    assert purge_expired_jobs(session) >= 1
    after = _purged(session)
    assert after.get("cancelled", 0) - before.get("cancelled", 0) == 4
    assert after.get("failed", 0) - before.get("failed", 0) == 1
    assert after.get("created", 0) == before.get("created", 0)
    assert session.execute(text("SELECT count(*) FROM sync_jobs WHERE id = :j"), {"j": accepted.job.id}).scalar() == 0


def test_a_purged_dry_runs_records_are_counted_apart(session: Session, partner: PartnerKey) -> None:
    elements = [{"external_id": f"d{i}", "name": f"Dry {i}"} for i in range(3)]
    accepted = accept_batch(
        session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=elements, dry_run=True
    )
    cancel_job(session, partner_id=partner.partner_id, job_id=accepted.job.id)
    real_before, dry_before = _purged(session), _purged(session, dry_run=True)
    session.execute(
        text("UPDATE sync_jobs SET finished_at = now() - make_interval(days => :d + 1) WHERE id = :j"),
        {"d": settings.job_retention_days, "j": accepted.job.id},
    )
    assert purge_expired_jobs(session) >= 1
    assert _purged(session, dry_run=True).get("cancelled", 0) - dry_before.get("cancelled", 0) == 3
    assert _purged(session).get("cancelled", 0) == real_before.get("cancelled", 0)


def test_queue_depth_counts_every_priority_list_of_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = f"pfsync-test-depth-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(settings, "queue_name", queue)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.rpush(queue, "a", "b", "c")
        client.rpush(queue + "\x06\x166", "d")
        snapshot = read_broker()
        assert snapshot.waiting == 4
        assert snapshot.unacked == client.hlen("unacked")
    finally:
        client.delete(queue, queue + "\x06\x166")
        client.close()


def test_an_unreachable_broker_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "redis_url", "redis://127.0.0.1:1/0")
    families = {family.name: family for family in JobMetricsCollector().collect()}
    up = {s.labels["source"]: s.value for s in families["pfsync_metrics_source_up"].samples}
    assert up == {"database": 1, "broker": 0}
    assert families["pfsync_queue_depth"].samples == []
    assert families["pfsync_jobs"].samples
