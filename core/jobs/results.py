"""Reading a job's results: in input order, filtered by outcome or external_id, paged or streamed (NDJSON or CSV),
and Pocketflows' shape."""

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

# The columns of the CSV form of results (SPEC §4): a result's fields, its errors' fields one list per column.
CSV_HEADER = (
    "index",
    "outcome",
    "id",
    "external_id",
    "changed_fields",
    "error_codes",
    "error_paths",
    "error_messages",
)
# Where a list is one cell, its elements are joined with this.
CSV_LIST_SEPARATOR = ";"
_STREAM_BATCH = 1000


def result_view(stored: dict[str, Any]) -> dict[str, Any]:
    """A result as the API shows it, every field in place: `changed_fields` is stored only when it is not empty
    (and not at all by results older than it), `changes` only by a dry run, for a replaced record."""
    view = {
        "index": stored["index"],
        "outcome": stored["outcome"],
        "id": stored["id"],
        "external_id": stored["external_id"],
        "changed_fields": stored.get("changed_fields", []),
        "errors": stored["errors"],
    }
    changes = stored.get("changes")
    if changes is not None:
        view["changes"] = changes
    return view


def iter_results(
    session: Session,
    job_id: str,
    *,
    outcome: str | None = None,
    external_id: str | None = None,
    after: int = -1,
) -> Iterator[dict[str, Any]]:
    """Results of processed records with index > `after` (of that outcome, with that external_id, if given), in
    input order, one chunk in memory at a time."""
    # A result is stored as orjson writes it, so a chunk holding that external_id holds these bytes: chunks without
    # them are passed over by the database, unread.
    needle = None if external_id is None else b'"external_id":' + orjson.dumps(external_id)
    for chunk_no in repository.done_chunks_after(
        session, job_id=job_id, after=after, outcome=outcome, containing=needle
    ):
        blob = repository.chunk_results(session, job_id=job_id, chunk_no=chunk_no)
        for result in orjson.loads(blob):
            if (
                result["index"] > after
                and (outcome is None or result["outcome"] == outcome)
                and (external_id is None or result["external_id"] == external_id)
            ):
                yield result_view(result)


def results_page(
    session: Session,
    job_id: str,
    *,
    outcome: str | None,
    starting_after: int,
    limit: int,
    external_id: str | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of results."""
    page: list[dict[str, Any]] = []
    for result in iter_results(session, job_id, outcome=outcome, external_id=external_id, after=starting_after):
        page.append(result)
        if len(page) > limit:
            break
    return page[:limit], len(page) > limit


def results_ndjson(
    session: Session, job_id: str, *, outcome: str | None, after: int, external_id: str | None = None
) -> Iterator[bytes]:
    """Every (filtered) result as NDJSON lines, a thousand at a time, for a streaming response."""
    buffer: list[bytes] = []
    for result in iter_results(session, job_id, outcome=outcome, external_id=external_id, after=after):
        buffer.append(orjson.dumps(result))
        if len(buffer) >= _STREAM_BATCH:
            yield b"\n".join(buffer) + b"\n"
            buffer.clear()
    if buffer:
        yield b"\n".join(buffer) + b"\n"


def csv_row(result: dict[str, Any]) -> list[str]:
    """A result as a CSV row: each value exactly as in the JSON result, null as an empty cell, a list's elements
    joined with `;` (an error without a path is an empty element of `error_paths`, so the lists stay aligned).

    Values are not altered to defuse spreadsheet formulas (a leading `=`, `+`, `-` or `@`): the cells must equal the
    JSON values, and an external_id such as `-1` or `=A1` is the partner's own data. Open the file as text (e.g.
    a spreadsheet's import with every column as text), not by double-clicking it.
    """
    errors = result["errors"]
    return [
        str(result["index"]),
        result["outcome"],
        result["id"] or "",
        result["external_id"] if result["external_id"] is not None else "",
        CSV_LIST_SEPARATOR.join(result["changed_fields"]),
        CSV_LIST_SEPARATOR.join(e["code"] for e in errors),
        CSV_LIST_SEPARATOR.join(e["path"] or "" for e in errors),
        CSV_LIST_SEPARATOR.join(e["message"] for e in errors),
    ]


def results_csv(
    session: Session, job_id: str, *, outcome: str | None, after: int, external_id: str | None = None
) -> Iterator[bytes]:
    """Every (filtered) result as CSV (RFC 4180: CRLF line ends, fields quoted where they hold a comma, a quote or a
    line break, quotes doubled; UTF-8 without a BOM), the header row first, then a thousand rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_HEADER)
    rows = 0
    for result in iter_results(session, job_id, outcome=outcome, external_id=external_id, after=after):
        writer.writerow(csv_row(result))
        rows += 1
        if rows % _STREAM_BATCH == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
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
    "CSV_HEADER",
    "OUTCOMES",
    "compat_body",
    "csv_row",
    "error_counts",
    "errors_by_code",
    "iter_results",
    "result_view",
    "results_csv",
    "results_ndjson",
    "results_page",
]
