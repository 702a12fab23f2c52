"""Reading a job's results: in input order, filtered by outcome, paged or streamed, and Pocketflows' shape."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy.orm import Session

from core.jobs import repository
from core.models import Business, SyncJob
from core.records.repository import stored_by_ids
from core.records.rules import OUTCOMES
from core.records.service import business_view, customer_view


def iter_results(
    session: Session, job_id: str, *, outcome: str | None = None, after: int = -1
) -> Iterator[dict[str, Any]]:
    """Results of processed records with index > `after`, in input order, one chunk in memory at a time."""
    for chunk_no in repository.done_chunks_after(session, job_id=job_id, after=after, outcome=outcome):
        blob = repository.chunk_results(session, job_id=job_id, chunk_no=chunk_no)
        for result in orjson.loads(blob):
            if result["index"] > after and (outcome is None or result["outcome"] == outcome):
                yield result


def results_page(
    session: Session, job_id: str, *, outcome: str | None, starting_after: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of results."""
    page: list[dict[str, Any]] = []
    for result in iter_results(session, job_id, outcome=outcome, after=starting_after):
        page.append(result)
        if len(page) > limit:
            break
    return page[:limit], len(page) > limit


def results_ndjson(session: Session, job_id: str, *, outcome: str | None, after: int) -> Iterator[bytes]:
    """Every (filtered) result as NDJSON lines, a thousand at a time, for a streaming response."""
    buffer: list[bytes] = []
    for result in iter_results(session, job_id, outcome=outcome, after=after):
        buffer.append(orjson.dumps(result))
        if len(buffer) >= 1000:
            yield b"\n".join(buffer) + b"\n"
            buffer.clear()
    if buffer:
        yield b"\n".join(buffer) + b"\n"


# The CSV form of results (SPEC §4): a header row, list cells joined with `;`, null as an empty cell.
CSV_COLUMNS = (
    "index",
    "outcome",
    "id",
    "external_id",
    "changed_fields",
    "error_codes",
    "error_paths",
    "error_messages",
)


def _csv_row(result: dict[str, Any]) -> list[Any]:
    errors = result.get("errors") or []
    return [
        result["index"],
        result["outcome"],
        result.get("id") or "",
        result.get("external_id") or "",
        ";".join(result.get("changed_fields") or []),
        ";".join(e["code"] for e in errors),
        ";".join(e.get("path") or "" for e in errors),
        ";".join(e.get("message") or "" for e in errors),
    ]


def results_csv(session: Session, job_id: str, *, outcome: str | None, after: int) -> Iterator[bytes]:
    """Every (filtered) result as CSV (RFC 4180: CRLF line ends, quoted where needed; UTF-8, no BOM), a thousand
    rows at a time, for a streaming response."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for result in iter_results(session, job_id, outcome=outcome, after=after):
        writer.writerow(_csv_row(result))
        rows += 1
        if rows % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def error_counts(results: Iterable[dict[str, Any]]) -> Counter[str]:
    """How many errors of each code the results carry (as stored: bounded, `too_many_errors` included)."""
    return Counter(error["code"] for result in results for error in result["errors"])


def errors_by_code(session: Session, job_id: str) -> list[tuple[str, int]]:
    """The job's errors so far by code, most frequent first: summed from the counts each chunk keeps, without
    reading results (but for chunks processed before those counts were kept)."""
    counts: Counter[str] = Counter(
        {row.code: int(row.errors) for row in repository.error_code_counts(session, job_id=job_id)}
    )
    for chunk_no in repository.chunks_without_error_counts(session, job_id=job_id):
        counts.update(error_counts(orjson.loads(repository.chunk_results(session, job_id=job_id, chunk_no=chunk_no))))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def compat_body(session: Session, job: SyncJob) -> dict[str, Any]:
    """Pocketflows' synchronous batch answer: an object (or null) per input index, and every error."""
    objects: list[dict[str, Any] | None] = [None] * job.total
    errors: list[dict[str, Any]] = []
    wanted: dict[str, list[int]] = {}
    for result in iter_results(session, job.id):
        index = result["index"]
        if result["outcome"] in ("failed", "cancelled"):
            for error in result["errors"] or [
                {"code": "cancelled", "message": "the job was cancelled first", "path": None}
            ]:
                errors.append({"index": index, "external_id": result["external_id"], **error})
        elif result["id"] is not None:
            wanted.setdefault(result["id"], []).append(index)
    id_list = list(wanted)
    for start in range(0, len(id_list), 5000):
        part = id_list[start : start + 5000]
        stored = stored_by_ids(session, kind=job.type, ids=part)
        views = [business_view(r) if isinstance(r, Business) else customer_view(r) for r in stored]
        for view in views:
            for index in wanted[view["id"]]:
                objects[index] = view
    return {job.type: objects, "errors": errors}


__all__ = [
    "CSV_COLUMNS",
    "OUTCOMES",
    "compat_body",
    "error_counts",
    "errors_by_code",
    "iter_results",
    "results_csv",
    "results_ndjson",
    "results_page",
]
