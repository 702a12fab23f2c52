"""Through a real worker: every error that applies to a batch record, bounded, and job timestamps in order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import text

from core.db import session_scope
from tests.conftest import DATABASE_URL
from tests.e2e.conftest import Process, all_results, batch_url, publishing_to, wait_for, wait_job


def _codes(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["code"], e["path"]) for e in result["errors"]]


def test_a_repeated_invalid_email_is_reported_invalid_and_duplicate(client, worker, business) -> None:  # noqa: ARG001
    records: list[Any] = [
        {"external_id": "a", "email_address": "not-an-email"},
        {"external_id": "b", "email_address": "not-an-email"},
        {"external_id": "c", "email_address": "c@example.com"},
        {"external_id": "c", "email_address": "c2@example.com", "phone_number": "x"},
        # Many errors and a duplicate: 20 shown, then how many more (the duplicate among them).
        {"external_id": "many", **{f"unknown_{i}": i for i in range(30)}},
        {"external_id": "many"},
        42,
    ]
    response = client.post(batch_url(business["id"]), json={"customers": records})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    results = all_results(client, job["id"])
    assert [r["outcome"] for r in results] == ["failed"] * 7

    for result in results[:2]:
        assert _codes(result) == [("invalid_email", "email_address"), ("duplicate_in_batch", "email_address")]
        assert "not-an-email" in result["errors"][1]["message"]
    assert [r["external_id"] for r in results[:2]] == ["a", "b"]
    assert _codes(results[2]) == [("duplicate_in_batch", "external_id")]
    assert _codes(results[3]) == [("invalid_phone", "phone_number"), ("duplicate_in_batch", "external_id")]

    many = results[4]["errors"]
    assert len(many) == 21
    assert [e["code"] for e in many[:20]] == ["unknown_field"] * 20
    assert (many[20]["code"], many[20]["path"]) == ("too_many_errors", None)
    assert many[20]["message"].startswith("and 11 more errors")  # 10 unknown fields and the duplicate
    assert _codes(results[5]) == [("duplicate_in_batch", "external_id")]
    assert _codes(results[6]) == [("invalid_record", None)]


def _stored_times(job_id: str) -> dict[str, datetime | None]:
    """The job's timestamps as PostgreSQL holds them (to the microsecond; the API shows milliseconds)."""
    with session_scope() as session:
        row = session.execute(
            text("SELECT created_at, started_at, finished_at, cancel_requested_at FROM sync_jobs WHERE id = :j"),
            {"j": job_id},
        ).one()
    return dict(row._mapping)


def test_a_one_chunk_job_starts_before_it_finishes(client, worker, business) -> None:  # noqa: ARG001
    for _ in range(3):
        response = client.post(batch_url(business["id"]), json={"customers": [{"external_id": "one"}]})
        job = wait_job(client, response.json()["id"])
        assert job["status"] == "completed"
        assert job["created_at"] <= job["started_at"] <= job["finished_at"]
        times = _stored_times(job["id"])
        assert times["created_at"] <= times["started_at"] <= times["finished_at"], times  # type: ignore[operator]


def _waiting_on_a_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND application_name = 'pfsync'"
    ).fetchone()
    return bool(row and row[0])


def test_a_job_cancelled_while_its_last_chunk_runs_finishes_after_the_cancel(
    client, business, idle_queue: str, start_worker: Callable[..., Process]
) -> None:
    with publishing_to(idle_queue):
        response = client.post(
            batch_url(business["id"]), json={"customers": [{"external_id": f"c{i}"} for i in range(50)]}
        )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    # Hold the business row, so the worker that claims the chunk waits writing its customers (a foreign key check).
    with psycopg.connect(DATABASE_URL) as hold:
        hold.execute("SELECT 1 FROM businesses WHERE id = %s FOR UPDATE", (business["id"],))
        held = start_worker(idle_queue, "held")
        try:
            wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "running", 30, 0.05, "the claim")
            # Past its cancel check and waiting on the held row: the cancel must find the chunk being processed.
            wait_for(lambda: _waiting_on_a_lock(hold), 30, 0.05, "the worker to wait on the held row")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker's log:\n{held.log()[-4000:]}") from None
        cancel = client.post(f"/jobs/{job_id}/cancel")
        assert cancel.status_code == 200, cancel.text
        assert cancel.json()["status"] == "running"  # the chunk being processed finishes
        hold.rollback()
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled"
    assert job["counts"]["created"] == 50
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["cancel_requested_at"] <= job["finished_at"]
    times = _stored_times(job_id)
    assert times["created_at"] <= times["started_at"] <= times["finished_at"], times  # type: ignore[operator]
    assert times["cancel_requested_at"] <= times["finished_at"], times  # type: ignore[operator]
