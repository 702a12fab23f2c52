"""Accepting a batch in the domain, on the real database: every record stored chunk by chunk, with the errors
found at acceptance kept whole when one record has several."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings
from core.errors import DomainError
from core.jobs.service import accept_batch
from tests.conftest import PartnerKey


def _rejections(session: Session, job_id: str) -> dict[int, list[str]]:
    rows = session.execute(
        text("SELECT first_index, rejections FROM job_chunks WHERE job_id = :j ORDER BY chunk_no"), {"j": job_id}
    ).all()
    return {
        first + int(offset): [e["code"] for e in errors]
        for first, found in rows
        for offset, errors in (found or {}).items()
    }


def test_a_batch_is_stored_in_chunks_and_its_rejections_add_up(
    session: Session, partner: PartnerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "chunk_size", 2)
    elements = [
        {"external_id": "a", "name": "A"},
        {"external_id": "twice", "name": "B", "metadata": {"n": 2**70}},  # JSON cannot carry it, and a duplicate
        "not an object",
        {"external_id": "twice", "name": "C", "metadata": {"f": Decimal("1.5")}},
        {"external_id": "e", "name": "E"},
    ]
    accepted = accept_batch(
        session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=elements
    )
    assert (accepted.job.total, accepted.job.chunk_count) == (5, 3)
    assert _rejections(session, accepted.job.id) == {
        1: ["invalid_number", "duplicate_in_batch"],
        2: ["invalid_record"],
        3: ["duplicate_in_batch"],
    }


def test_an_empty_batch_is_refused(session: Session, partner: PartnerKey) -> None:
    with pytest.raises(DomainError) as refused:
        accept_batch(session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=[])
    assert refused.value.code == "empty_batch"
