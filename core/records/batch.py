"""Batch acceptance: parse a JSON or NDJSON body once, judge each element alone, cut it into chunks.

Nothing here validates fields: that happens once, in the worker. Acceptance only finds what makes a record
unprocessable on its own (not an object, not JSON) or together with others (`duplicate_in_batch`), so the 202
goes out fast.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

import ijson

from core import json_input
from core.config import settings
from core.errors import DomainError, FieldError
from core.json_input import DepthGuard, JsonSyntaxError, ValueTooLarge
from core.records.schemas import parse_record

_DUPLICATE_KEYS = {
    "businesses": ("id", "external_id"),
    "customers": ("id", "external_id", "email_address"),
}
_KEY_ORDER = _DUPLICATE_KEYS["customers"]
_HASH_BUCKETS = 16
# One record of a batch, as sent (the same bound as a single sync's body).
MAX_RECORD_BYTES = 1024 * 1024
# A chunk holds at most this many bytes of the body's records, besides PFSYNC_CHUNK_SIZE records: a batch of large
# records is cut into more chunks, so that neither the API accepting it nor a worker applying a chunk holds more
# than this of it at once (a record of up to MAX_RECORD_BYTES past it).
MAX_CHUNK_BYTES = 2 * 1024 * 1024
# How far ahead of the element it yields the JSON parser may have read (ijson's buffer): a record's share of the
# bytes read is at least its size less this, so only one that took more than `SIZE_CHECKED_PAST` can be too large.
_READ_AHEAD = 64 * 1024
SIZE_CHECKED_PAST = MAX_RECORD_BYTES - _READ_AHEAD
# A record of a JSON batch past MAX_RECORD_BYTES fails alone, but only once parsed whole: past this one, the batch
# is refused as it is read (413 `record_too_large`), so that no record costs the API more memory than this parsed.
MAX_PARSED_RECORD_BYTES = 8 * MAX_RECORD_BYTES


@dataclass(slots=True)
class BytesRead:
    """How many bytes of a body its parser has read so far (`json_elements`, `ndjson_elements` keep it): where it
    stands, without asking the file (a system call each time, once the body is spooled to disk)."""

    count: int = 0


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
        if element.__class__ is not dict:  # kept as null: nothing of it is needed (a string may be large)
            self.records.append(None)
            self.rejections[index] = [
                FieldError("invalid_record", f"a record must be a JSON object, not {_json_type(element)}", None)
            ]
            return
        self.records.append(element)
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

    def add_sized(self, kind: str, element: Any, read: int) -> None:
        """`add` an element of which `read` bytes of the body were read since the one before; one whose JSON is
        larger than MAX_RECORD_BYTES fails with `record_too_large` (as an NDJSON line does), and only its keys
        are kept (for duplicate detection and its result's label)."""
        if read <= SIZE_CHECKED_PAST or element.__class__ is not dict:
            self.add(kind, element)
            return
        try:
            size = len(json_input.to_json(element))
        except TypeError:  # a value JSON cannot carry: found as the chunk is cut (`_storable`)
            size = read
        if size <= MAX_RECORD_BYTES:
            self.add(kind, element)
            return
        index = self.count
        self.add(kind, _keys_only(element))
        message = f"the record is {size} bytes of JSON; the limit is {MAX_RECORD_BYTES}"
        self.rejections[index] = [FieldError("record_too_large", message, None)]

    def cut(self, kind: str, chunk_no: int, size: int) -> Chunk:
        """Take the first `size` pending records off as a chunk."""
        part = self.records[:size]
        start = self.offset
        try:
            payload = json_input.to_json(part)
        except TypeError:
            payload = self._storable(kind, part)
        rejections = {}
        for i in range(start, start + len(part)):
            errors = self.rejections.pop(i, None)
            if errors is not None:
                rejections[str(i - start)] = [e.as_dict() for e in errors]
        del self.records[:size]
        self.offset += len(part)
        return Chunk(chunk_no, start, payload, len(part), rejections or None)

    def _storable(self, kind: str, part: list[Any]) -> bytes:
        """The chunk's JSON when some record holds a value JSON cannot carry exactly (an integer beyond 64 bits, a
        number beyond the double range, nesting past 255 levels): each such record fails alone with what
        validation finds in it, and only its keys are stored (for duplicate detection and its result's label)."""
        stored = []
        for i, element in enumerate(part):
            try:
                json_input.to_json([element])  # as it sits in the chunk: one level down
                stored.append(element)
                continue
            except TypeError as exc:
                problem = str(exc)
            index = self.offset + i
            if index not in self.rejections:
                errors = parse_record(kind, element)
                if not isinstance(errors, list):
                    message = f"the record holds a value that cannot be stored: {problem}"
                    errors = [FieldError("malformed_record", message, None)]
                self.rejections[index] = errors
            stored.append(_keys_only(element))
        return json_input.to_json(stored)


def _keys_only(element: Any) -> dict[str, str]:
    """What is kept of a record that cannot be stored whole: its keys (for duplicate detection and its label)."""
    if element.__class__ is not dict:
        return {}
    return {key: element[key] for key in _KEY_ORDER if isinstance(element.get(key), str)}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", Decimal: "a number", str: "a string"}
    return kinds.get(type(value), "an array" if isinstance(value, list) else "a value")


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


def json_elements(kind: str, body: IO[bytes], read: BytesRead | None = None) -> Iterator[Any]:
    """The elements of `{"<kind>": [...]}`, parsed one at a time from a file (ijson's C backend): memory holds one
    record, not the document. Numbers are exact (integers as `int`, fractions as `Decimal`). `read`, when given,
    follows the bytes read as each element is yielded."""
    # The records are the values nested in the envelope's object (1) and its list (2).
    guard = DepthGuard(body, element_depth=2, element_bytes=MAX_PARSED_RECORD_BYTES)
    progress = read if read is not None else BytesRead()
    count = 0
    try:
        for element in ijson.items(guard, f"{kind}.item", use_float=False, buf_size=_READ_AHEAD):
            count += 1
            progress.count = guard.bytes_read
            yield element
        if count == 0:
            body.seek(0)
            _check_envelope(kind, ijson.parse(DepthGuard(body), use_float=False))
    except JsonSyntaxError as exc:
        raise malformed_body(exc) from None
    except ijson.JSONError as exc:
        raise malformed_body(_yajl_error(exc, guard)) from None
    except UnicodeDecodeError:
        raise malformed_body(JsonSyntaxError("text that is not UTF-8", *guard.position())) from None
    except ValueTooLarge:
        line, column = guard.position()
        raise DomainError(
            "record_too_large",
            f"A record of the batch (at line {line}, column {column} or before) is larger than "
            f"{MAX_PARSED_RECORD_BYTES} bytes; one over {MAX_RECORD_BYTES} fails alone, one this large refuses "
            "the batch. Send records of at most 1 MiB.",
            413,
        ) from None


def malformed_body(error: JsonSyntaxError) -> DomainError:
    """The 400 of a body that is not JSON."""
    return DomainError("malformed_body", f"The body is not valid JSON: {error.describe()}.", 400)


def _yajl_error(exc: Exception, guard: DepthGuard) -> JsonSyntaxError:
    """yajl's message (first line: what; then the text around the error, and a caret under it) with a position."""
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = str(text).split("\n")
    what = lines[0].partition(": ")[2] or lines[0]
    if len(lines) >= 3 and "^" in lines[2]:
        # The caret stands just past the offending token.
        line, column = guard.locate(lines[1], max(0, lines[2].index("^") - 1))
    else:
        line, column = guard.position()
    return JsonSyntaxError(what[:200], line, column)


def _check_envelope(kind: str, events: Iterator[tuple[str, str, Any]]) -> None:
    """Raise `invalid_envelope` unless the document is an object whose `kind` key holds a list."""
    first = next(events, None)
    if first is not None and first[1] == "start_map":
        for prefix, event, value in events:
            if prefix == "" and event == "map_key" and value == kind:
                if next(events, ("", "", None))[1] == "start_array":
                    return
                break
    raise DomainError(
        "invalid_envelope",
        f'The body must be a JSON object whose "{kind}" key holds the list of records.',
        422,
        [FieldError("invalid_envelope", f"expected a list of {kind}", kind)],
    )


def ndjson_elements(body: IO[bytes], read: BytesRead | None = None) -> Iterator[Any]:
    """One element per non-blank line of an NDJSON file; a line that is not JSON, or longer than
    `MAX_RECORD_BYTES`, yields a `FieldError` instead, so it fails that record alone. `read`, when given, follows
    the bytes read as each element is yielded."""
    progress = read if read is not None else BytesRead()
    number = 0
    while True:
        line = body.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        progress.count += len(line)
        number += 1
        if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while (rest := body.readline(1 << 20)) and not rest.endswith(b"\n"):
                progress.count += len(rest)
            yield FieldError("record_too_large", f"line {number} is longer than {MAX_RECORD_BYTES} bytes", None)
        elif line.strip():
            yield _ndjson_line(number, line)


def _ndjson_line(number: int, line: bytes) -> Any:
    try:
        return json_input.loads(line)
    except JsonSyntaxError as exc:
        return FieldError("malformed_record", f"line {number} is not valid JSON: {exc.message}", None)


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
