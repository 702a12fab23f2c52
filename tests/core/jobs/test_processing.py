"""A job's chunks as the workers apply them: records likely new (an initial load) are written without a lookup,
and a job whose records turn out to be stored reads the rows first from then on."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.config import settings as service_settings
from core.db import new_session
from core.jobs import processing
from tests.core.jobs.test_dry_run import _business, _seed, run_job


def _outcomes(results: list[dict[str, object]]) -> list[tuple[object, list[object]]]:
    return [(r["outcome"], [e["code"] for e in r["errors"]]) for r in results]  # type: ignore[attr-defined]


def test_an_initial_load_is_created_whole_and_its_job_still_assumed_new(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_settings, "chunk_size", 2)
    session = new_session()
    try:
        scope = _business(session)
        elements = [{"external_id": f"n-{i}", "email_address": f"n{i}@example.com"} for i in range(5)]
        job, results = run_job(session, scope, elements, dry_run=False)
        assert _outcomes(results) == [("created", [])] * 5
        assert job.id not in processing._FOUND_STORED
        stored = session.execute(
            text("SELECT count(*) FROM customers WHERE business_id = :b"), {"b": scope.business_id}
        )
        assert stored.scalar_one() == 5
    finally:
        session.rollback()
        session.close()


def test_a_job_whose_record_meets_a_stored_key_reads_the_rows_first_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first chunk fails one record on an email address a stored customer holds (no counter says so: it is a
    failure), and the chunks after it are planned over the rows they name, with the same outcomes."""
    monkeypatch.setattr(service_settings, "chunk_size", 2)
    session = new_session()
    try:
        scope = _business(session)
        _seed(session, scope, [{"external_id": "stored", "email_address": "held@example.com"}])
        elements = [
            {"external_id": "n-0"},
            {"external_id": "n-1", "email_address": "HELD@example.com"},
            {"external_id": "n-2"},
            {"external_id": "stored", "email_address": "moved@example.com", "full_name": "Stored"},
            {"external_id": "n-4"},
        ]
        job, results = run_job(session, scope, elements, dry_run=False)
        assert _outcomes(results) == [
            ("created", []),
            ("failed", ["email_address_taken"]),
            ("created", []),
            ("replaced", []),
            ("created", []),
        ]
        assert job.id in processing._FOUND_STORED
        rows = session.execute(
            text("SELECT external_id, full_name FROM customers WHERE business_id = :b ORDER BY external_id"),
            {"b": scope.business_id},
        )
        assert rows.all() == [("n-0", None), ("n-2", None), ("n-4", None), ("stored", "Stored")]
    finally:
        session.rollback()
        session.close()


def test_the_jobs_remembered_as_found_stored_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing, "_FOUND_STORED", type(processing._FOUND_STORED)())
    monkeypatch.setattr(processing, "_FOUND_STORED_LIMIT", 3)
    for job_id in ("a", "b", "c", "a", "d"):
        processing._remember_found_stored(job_id)
    assert list(processing._FOUND_STORED) == ["c", "a", "d"]
