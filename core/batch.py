"""Batch acceptance: parse a JSON or NDJSON body once, judge each element alone, cut it into chunks.

Nothing here validates fields: that happens once, in the worker. Acceptance only finds what makes a record
unprocessable on its own (not an object, not JSON) or together with others (`duplicate_in_batch`), so the 202
goes out fast.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.config import settings
from core.errors import DomainError, FieldError

_DUPLICATE_KEYS = {
    "businesses": ("id", "external_id"),
    "customers": ("id", "external_id", "email_address"),
}
_KEY_ORDER = _DUPLICATE_KEYS["customers"]
_HASH_BUCKETS = 16


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
    """A batch's records as parsed, judged one by one, and the errors of those rejected at acceptance.

    Records can be cut off into chunks as they come (`cut`), so a streamed batch never sits whole in memory.
    For duplicate detection, only a 64-bit hash of each key is kept for the whole batch (16 bytes a key, where
    the keys themselves in dictionaries took some 120), spread over buckets so that finding the equal ones at the
    end never holds more than a bucket as Python objects: those are the candidates, checked against the records'
    actual values (`duplicate_errors`). So memory stays flat in the size of a streamed batch.
    """

    # The records not cut into a chunk yet; `records[0]` has index `offset`.
    records: list[Any] = field(default_factory=list)
    offset: int = 0
    rejections: dict[int, list[FieldError]] = field(default_factory=dict)
    # For duplicate detection: per key name, buckets of the hash of each record's value and the record's index.
    key_hashes: dict[str, list[tuple[array[int], array[int]]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many records were added in all."""
        return self.offset + len(self.records)

    def add(self, kind: str, element: Any) -> None:
        index = self.count
        self.records.append(element)
        if element.__class__ is not dict:
            self.rejections[index] = [
                FieldError("invalid_record", f"a record must be a JSON object, not {_json_type(element)}", None)
            ]
            return
        for key in _DUPLICATE_KEYS[kind]:
            value = _key_value(key, element)
            if value is None:
                continue
            buckets = self.key_hashes.get(key)
            if buckets is None:
                buckets = self.key_hashes[key] = [(array("q"), array("q")) for _ in range(_HASH_BUCKETS)]
            digest = hash(value)
            bucket = buckets[digest & (_HASH_BUCKETS - 1)]
            bucket[0].append(digest)
            bucket[1].append(index)

    def reject(self, error: FieldError) -> None:
        self.rejections[self.count] = [error]
        self.records.append(None)

    def cut(self, chunk_no: int, size: int) -> Chunk:
        """Take the first `size` pending records off as a chunk."""
        part = self.records[:size]
        start = self.offset
        rejections = {}
        for i in range(start, start + len(part)):
            errors = self.rejections.pop(i, None)
            if errors is not None:
                rejections[str(i - start)] = [e.as_dict() for e in errors]
        del self.records[:size]
        self.offset += len(part)
        return Chunk(chunk_no, start, orjson.dumps(part), len(part), rejections or None)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a value"
    )


def check_count(count: int) -> None:
    """Refuse an empty batch (422) or one over PFSYNC_MAX_BATCH_RECORDS (413)."""
    if count == 0:
        raise DomainError("empty_batch", "The batch holds no records; send 1 or more.", 422)
    if count > settings.max_batch_records:
        raise DomainError(
            "too_many_records",
            f"The batch holds more than {settings.max_batch_records} records (PFSYNC_MAX_BATCH_RECORDS); "
            "split it into several batches.",
            413,
        )


def json_elements(kind: str, body: bytes) -> list[Any]:
    """The elements of `{"<kind>": [...]}`."""
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
    check_count(len(elements))
    return elements


def ndjson_elements(parts: Iterable[bytes]) -> Iterator[Any]:
    """One element per non-blank line of a body that arrives in parts; a line that is not JSON yields the
    `malformed_record` error instead, so it fails that record alone."""
    number = 0
    tail = b""
    for part in parts:
        lines = (tail + part).split(b"\n")
        tail = lines.pop()
        for line in lines:
            number += 1
            if line.strip():
                yield _ndjson_line(number, line)
    if tail.strip():
        yield _ndjson_line(number + 1, tail)


def _ndjson_line(number: int, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return FieldError("malformed_record", f"line {number} is not valid JSON: {exc.msg}", None)


def _key_value(key: str, element: dict[str, Any]) -> str | None:
    """The value of a key that must be unique within a batch, as compared (email addresses case-insensitively)."""
    value = element.get(key)
    if value.__class__ is not str:
        return None
    return value.lower() if key == "email_address" else value


def _same_hash_indices(buckets: list[tuple[array[int], array[int]]]) -> list[int]:
    """The indices whose hash some other record shares (few, or none), a bucket at a time."""
    found: list[int] = []
    for hashes, indices in buckets:
        ordered = sorted(hashes)
        shared = {h for h, following in zip(ordered, ordered[1:], strict=False) if h == following}
        del ordered
        if shared:
            found += [index for h, index in zip(hashes, indices, strict=True) if h in shared]
    return found


RecordsAt = Callable[[Sequence[int]], Mapping[int, Any]]


def duplicate_errors(batch: ParsedBatch, records_at: RecordsAt | None = None) -> dict[int, list[FieldError]]:
    """The `duplicate_in_batch` errors of every record sharing an id, external_id or email address (SPEC §4).

    `records_at` gives the records at some indices, for a batch already cut into chunks; by default they are
    read from `batch.records` (a batch held whole).
    """
    if records_at is None:
        held = batch.records
        records_at = lambda indices: {i: held[i] for i in indices}  # noqa: E731
    groups: list[tuple[int, int, str, str, list[int]]] = []
    for key, buckets in batch.key_hashes.items():
        candidates = _same_hash_indices(buckets)
        if not candidates:
            continue
        by_value: dict[str, list[int]] = {}
        for index, element in sorted(records_at(candidates).items()):
            by_value.setdefault(_key_value(key, element) or "", []).append(index)
        # In the order they are found repeated reading the batch in input order, each record's keys in turn.
        order = _KEY_ORDER.index(key)
        groups += [(members[1], order, key, value, members) for value, members in by_value.items() if len(members) > 1]
    found_errors: dict[int, list[FieldError]] = {}
    for _, _, key, value, members in sorted(groups):
        for index in members:
            others = [i for i in members if i != index]
            shown = ", ".join(str(i) for i in others[:10]) + (
                f" and {len(others) - 10} more" if len(others) > 10 else ""
            )
            error = FieldError(
                "duplicate_in_batch",
                f"{key} {value!r} also appears at index {shown} of this batch; each record may appear once",
                key,
            )
            found_errors.setdefault(index, []).append(error)
    return found_errors


def mark_duplicates(batch: ParsedBatch) -> None:
    """Add the duplicate errors to the batch's rejections (for a batch held whole)."""
    for index, errors in duplicate_errors(batch).items():
        batch.rejections.setdefault(index, []).extend(errors)
