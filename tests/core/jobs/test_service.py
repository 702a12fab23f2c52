"""Accepting a batch in the domain, on the real database: every record stored chunk by chunk, with the errors
found at acceptance kept whole when one record has several."""

from __future__ import annotations

import io
from decimal import Decimal
from itertools import accumulate
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings
from core.errors import DomainError
from core.jobs.service import Accepted, accept_batch
from core.records.batch import MAX_CHUNK_BYTES, MAX_RECORD_BYTES, BytesRead, json_elements
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


def _chunks(session: Session, job_id: str) -> list[tuple[int, int, int]]:
    rows = session.execute(
        text("SELECT first_index, record_count, length(payload) FROM job_chunks WHERE job_id = :j ORDER BY chunk_no"),
        {"j": job_id},
    )
    return [tuple(row) for row in rows.all()]


def _accept_json(session: Session, partner: PartnerKey, records: list[dict[str, Any]]) -> Accepted:
    """Accept businesses sent as a JSON envelope, as the API does: parsed incrementally, the bytes read followed."""
    read = BytesRead()
    elements = json_elements("businesses", io.BytesIO(orjson.dumps({"businesses": records})), read)
    return accept_batch(
        session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=elements, read=read
    )


def test_a_batch_of_large_records_is_cut_by_bytes_too(session: Session, partner: PartnerKey) -> None:
    """However few its records, no chunk holds much more than MAX_CHUNK_BYTES of them: neither the API accepting
    the batch nor the worker applying a chunk holds more at once. Duplicates are found across those chunks."""
    body = [{"external_id": f"big-{i}", "name": "x" * 200, "metadata": {"text": "y" * 600_000}} for i in range(20)]
    body[17]["external_id"] = "big-3"  # in another chunk than its twin
    accepted = _accept_json(session, partner, body)
    chunks = _chunks(session, accepted.job.id)
    assert accepted.job.total == 20
    assert len(chunks) == accepted.job.chunk_count >= 3
    assert [first for first, _, _ in chunks] == list(accumulate([0] + [count for _, count, _ in chunks[:-1]]))
    assert sum(count for _, count, _ in chunks) == 20
    for _, count, stored in chunks:
        assert count < settings.chunk_size
        assert stored <= MAX_CHUNK_BYTES + MAX_RECORD_BYTES
    assert _rejections(session, accepted.job.id) == {3: ["duplicate_in_batch"], 17: ["duplicate_in_batch"]}


def test_a_json_record_over_a_mebibyte_fails_alone_and_only_its_keys_are_kept(
    session: Session, partner: PartnerKey
) -> None:
    body: list[dict[str, Any]] = [
        {"external_id": "before", "name": "B"},
        {"external_id": "huge", "name": "H", "metadata": {"text": "z" * (MAX_RECORD_BYTES + 10)}},
        {"external_id": "after", "name": "A"},
    ]
    accepted = _accept_json(session, partner, body)
    assert _rejections(session, accepted.job.id) == {1: ["record_too_large"]}
    (payload,) = session.execute(
        text("SELECT payload FROM job_chunks WHERE job_id = :j"), {"j": accepted.job.id}
    ).scalars()
    assert orjson.loads(payload)[1] == {"external_id": "huge"}
