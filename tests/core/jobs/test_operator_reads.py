"""What the operator console reads of jobs, on the real database: every partner's jobs newest first with each
filter and keyset pages both ways, a job's chunks, its errors by code without reading results, the CSV of its
results, and each partner's totals."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings
from core.jobs import results
from core.jobs.processing import cancel_job, count_attempt, process_chunk
from core.jobs.service import accept_batch, chunk_page, find_job, list_all_jobs, partner_job_totals
from core.ops.throughput import records_per_second
from tests.conftest import PartnerKey


def _run(session: Session, partner_id: str, elements: list[Any], kind: str = "businesses") -> str:
    """Accept a batch and apply every chunk of it in this session."""
    accepted = accept_batch(session, partner_id=partner_id, kind=kind, business_id=None, elements=elements)
    job_id = accepted.job.id

    def claimer(chunk_no: int) -> Callable[[], int | None]:
        return lambda: count_attempt(session, job_id=job_id, chunk_no=chunk_no)

    for chunk_no in range(accepted.job.chunk_count):
        process_chunk(session, job_id=job_id, chunk_no=chunk_no, claim=claimer(chunk_no))
    return job_id


def _ids(page: Any) -> list[str]:
    return [job.id for job, _ in page.jobs]


def test_every_partners_jobs_newest_first_filtered_and_paged_both_ways(
    session: Session, partner: PartnerKey, other_partner: PartnerKey
) -> None:
    mine = [_run(session, partner.partner_id, [{"external_id": f"m{i}", "name": "M"}]) for i in range(3)]
    theirs = _run(session, other_partner.partner_id, [{"external_id": "t", "name": "T"}])
    queued = accept_batch(
        session, partner_id=other_partner.partner_id, kind="businesses", business_id=None, elements=[{"name": "Q"}]
    ).job.id
    newest = list_all_jobs(session, limit=5)
    assert _ids(newest)[:5] == [queued, theirs, *reversed(mine)]
    assert [name for _, name in newest.jobs[:2]] == ["other partner", "other partner"]
    assert not newest.has_newer

    assert _ids(list_all_jobs(session, partner_id=partner.partner_id, limit=10)) == list(reversed(mine))
    assert _ids(list_all_jobs(session, status="queued", partner_id=other_partner.partner_id, limit=10)) == [queued]
    assert _ids(list_all_jobs(session, status="completed", kind="businesses", partner_id=other_partner.partner_id,
                              limit=10)) == [theirs]  # fmt: skip
    assert _ids(list_all_jobs(session, kind="customers", partner_id=partner.partner_id, limit=10)) == []

    first = list_all_jobs(session, partner_id=partner.partner_id, limit=2)
    assert _ids(first) == [mine[2], mine[1]]
    assert first.has_older
    assert not first.has_newer
    older = list_all_jobs(session, partner_id=partner.partner_id, limit=2, starting_after=mine[1])
    assert _ids(older) == [mine[0]]
    assert older.has_newer
    assert not older.has_older
    newer = list_all_jobs(session, partner_id=partner.partner_id, limit=2, ending_before=mine[0])
    assert _ids(newer) == [mine[2], mine[1]]
    assert not newer.has_newer
    assert newer.has_older

    job, name = find_job(session, job_id=theirs)
    assert (job.partner_id, name) == (other_partner.partner_id, "other partner")


def test_a_job_records_the_key_that_submitted_it(session: Session, partner: PartnerKey) -> None:
    accepted = accept_batch(
        session,
        partner_id=partner.partner_id,
        kind="businesses",
        business_id=None,
        elements=[{"name": "K"}],
        api_key_id=partner.key_id,
    )
    assert find_job(session, job_id=accepted.job.id)[0].api_key_id == partner.key_id


def test_errors_by_code_are_counted_per_chunk_and_match_the_results(
    session: Session, partner: PartnerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "chunk_size", 3)
    elements: list[Any] = [
        {"external_id": "ok", "name": "Fine"},
        {"external_id": "no-name"},
        "not an object",
        {"name": "N", "bogus": 1, "other": 2},
        {"external_id": "dup", "name": "A"},
        {"external_id": "dup", "name": "B"},
        {"external_id": "late", "name": "L"},
    ]
    job_id = _run(session, partner.partner_id, elements)
    every = list(results.iter_results(session, job_id))
    expected = results.error_counts(every)
    assert dict(results.errors_by_code(session, job_id)) == dict(expected)
    assert expected["unknown_field"] == 2
    assert expected["duplicate_in_batch"] == 2
    # A chunk processed before the counts were kept is counted from its results.
    session.execute(text("UPDATE job_chunks SET error_counts = NULL WHERE job_id = :j AND chunk_no = 1"), {"j": job_id})
    assert dict(results.errors_by_code(session, job_id)) == dict(expected)

    chunks, more = chunk_page(session, job_id=job_id, after=-1, limit=2)
    assert [c.chunk_no for c in chunks] == [0, 1]
    assert more
    assert all(c.state == "done" and c.attempts == 1 and c.duration_ms is not None for c in chunks)
    chunks, more = chunk_page(session, job_id=job_id, after=1, limit=2)
    assert [(c.chunk_no, c.record_count) for c in chunks] == [(2, 1)]
    assert not more


def test_results_as_csv_follow_the_spec_columns(session: Session, partner: PartnerKey) -> None:
    job_id = _run(session, partner.partner_id, [{"external_id": "a,b", "name": "A"}, {"name": "B", "x": 1, "y": 2}])
    body = b"".join(results.results_csv(session, job_id, outcome=None, after=-1))
    assert not body.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in body
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == list(results.CSV_HEADER)
    created, failed = rows[1], rows[2]
    assert created[:2] == ["0", "created"]
    assert created[2].startswith("biz_")
    assert created[3] == "a,b"
    assert created[4:] == ["", "", "", ""]
    assert failed[:4] == ["1", "failed", "", ""]
    assert failed[5] == "unknown_field;unknown_field"
    assert failed[6] == "x;y"
    only_failed = b"".join(results.results_csv(session, job_id, outcome="failed", after=-1)).decode()
    assert only_failed.count("\r\n") == 2
    ndjson = b"".join(results.results_ndjson(session, job_id, outcome="failed", after=-1))
    assert [orjson.loads(line)["index"] for line in ndjson.splitlines()] == [1]


def test_partner_totals_and_records_per_second_come_from_counters(
    session: Session, partner: PartnerKey, other_partner: PartnerKey
) -> None:
    before = records_per_second(session)
    _run(session, partner.partner_id, [{"external_id": "x", "name": "X"}, "bad"])
    accepted = accept_batch(
        session, partner_id=partner.partner_id, kind="businesses", business_id=None, elements=[{"name": "C"}] * 2
    )
    cancel_job(session, partner_id=partner.partner_id, job_id=accepted.job.id)
    totals = partner_job_totals(session, partner_ids=[partner.partner_id, other_partner.partner_id])
    assert set(totals) == {partner.partner_id}
    mine = totals[partner.partner_id]
    assert (mine["jobs"], mine["unfinished"], mine["total"], mine["processed"]) == (2, 0, 4, 4)
    assert (mine["created"], mine["failed"], mine["cancelled"]) == (1, 1, 2)

    after = records_per_second(session)
    assert after.buckets == 60
    assert all(len(rates) == 60 for rates in after.rates.values())
    for outcome, added in (("created", 1), ("failed", 1), ("cancelled", 2)):
        assert after.total(outcome) - before.total(outcome) == added
