"""Batch acceptance: parse a JSON or NDJSON body once, judge each element alone, cut it into chunks.

Nothing here validates fields: that happens once, in the worker. Acceptance only finds what makes a record
unprocessable on its own (not an object, not JSON) or together with others (`duplicate_in_batch`), so the 202
goes out fast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.config import settings
from core.errors import DomainError, FieldError

_DUPLICATE_KEYS = {
    "businesses": ("id", "external_id"),
    "customers": ("id", "external_id", "email_address"),
}


@dataclass(slots=True)
class Chunk:
    """A slice of a batch as stored: a JSON array of its records (`null` for an NDJSON line that was not JSON)."""

    chunk_no: int
    first_index: int
    payload: bytes
    record_count: int
    rejections: dict[str, list[dict[str, Any]]] | None


@dataclass(slots=True)
class ParsedBatch:
    """Every record of a batch as parsed, and the errors of those rejected at acceptance."""

    records: list[Any] = field(default_factory=list)
    rejections: dict[int, list[FieldError]] = field(default_factory=dict)
    # For duplicate detection: per key name, the first index of each value, and every index of repeated ones.
    first_seen: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    repeated: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, kind: str, element: Any) -> None:
        index = len(self.records)
        self.records.append(element)
        if element.__class__ is not dict:
            self.rejections[index] = [
                FieldError("invalid_record", f"a record must be a JSON object, not {_json_type(element)}", None)
            ]
            return
        for key in _DUPLICATE_KEYS[kind]:
            value = element.get(key)
            if value.__class__ is not str:
                continue
            if key == "email_address":
                value = value.lower()
            first = self.first_seen[key].setdefault(value, index)
            if first != index:
                self.repeated.setdefault((key, value), [first]).append(index)

    def reject(self, error: FieldError) -> None:
        self.rejections[len(self.records)] = [error]
        self.records.append(None)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a value"
    )


def _check_count(count: int) -> None:
    if count == 0:
        raise DomainError("empty_batch", "The batch holds no records; send 1 or more.", 422)
    if count > settings.max_batch_records:
        raise DomainError(
            "too_many_records",
            f"The batch holds more than {settings.max_batch_records} records (PFSYNC_MAX_BATCH_RECORDS); "
            "split it into several batches.",
            413,
        )


def parse_json_batch(kind: str, body: bytes) -> ParsedBatch:
    """Parse `{"<kind>": [...]}`."""
    if not body.strip():
        raise DomainError("malformed_body", "The request body is empty.", 400)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DomainError(
            "malformed_body",
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            400,
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get(kind), list):
        raise DomainError(
            "invalid_envelope",
            f'The body must be a JSON object whose "{kind}" key holds the list of records.',
            422,
            [FieldError("invalid_envelope", f"expected a list of {kind}", kind)],
        )
    elements: list[Any] = document[kind]
    _check_count(len(elements))
    batch = ParsedBatch()
    for element in elements:
        batch.add(kind, element)
    return batch


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if line:
            yield number, line


def parse_ndjson_batch(kind: str, body: bytes) -> ParsedBatch:
    """Parse one record per line; a line that is not JSON fails that record alone; blank lines are skipped."""
    batch = ParsedBatch()
    limit = settings.max_batch_records
    for number, line in _lines(body):
        if len(batch.records) >= limit:
            _check_count(limit + 1)
        try:
            element = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            batch.reject(FieldError("malformed_record", f"line {number} is not valid JSON: {exc.msg}", None))
            continue
        batch.add(kind, element)
    _check_count(len(batch.records))
    return batch


def mark_duplicates(batch: ParsedBatch) -> None:
    """Fail every record that shares an id, external_id or email address with another (SPEC §4)."""
    for (key, value), indices in batch.repeated.items():
        for index in indices:
            others = [i for i in indices if i != index]
            shown = ", ".join(str(i) for i in others[:10]) + (
                f" and {len(others) - 10} more" if len(others) > 10 else ""
            )
            error = FieldError(
                "duplicate_in_batch",
                f"{key} {value!r} also appears at index {shown} of this batch; each record may appear once",
                key,
            )
            batch.rejections.setdefault(index, []).append(error)


def chunks(batch: ParsedBatch, size: int) -> list[Chunk]:
    """Cut the batch into chunks of `size` records."""
    out: list[Chunk] = []
    records = batch.records
    for chunk_no, start in enumerate(range(0, len(records), size)):
        part = records[start : start + size]
        rejections = {
            str(i - start): [e.as_dict() for e in batch.rejections[i]]
            for i in range(start, start + len(part))
            if i in batch.rejections
        }
        out.append(
            Chunk(
                chunk_no=chunk_no,
                first_index=start,
                payload=orjson.dumps(part),
                record_count=len(part),
                rejections=rejections or None,
            )
        )
    return out
