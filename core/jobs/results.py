"""Reading a job's results: in input order, filtered by outcome, paged or streamed, and Pocketflows' shape."""

from __future__ import annotations

from collections.abc import Iterator
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


__all__ = ["OUTCOMES", "compat_body", "iter_results", "results_page", "results_ndjson"]
