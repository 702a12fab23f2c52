"""The files `pfsync push` reads, as batch bodies streamed from disk, never held whole in memory.

JSON and NDJSON go up as they are on disk (a bare JSON array wrapped in its envelope on the way); CSV is converted
to NDJSON row by row as it is sent, after one reading pass that refuses a broken file before anything is sent.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cli.output import UsageError

EXTENSIONS = {".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}
PART_BYTES = 64 * 1024
METADATA = "metadata"

# Called with how many bytes of the file have been read so far.
ReadProgress = Callable[[int], None]


@dataclass(frozen=True)
class Upload:
    """A batch body ready to stream: its media type, its length when known, and how to produce its parts."""

    content_type: str
    content_length: int | None  # None: converted on the fly, sent chunked
    file_size: int  # the progress total: bytes of FILE
    parts: Callable[[ReadProgress], Iterator[bytes]]


def file_format(path: Path, given: str | None) -> str:
    """The format named by --format, else by FILE's extension."""
    if given:
        return given
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise UsageError(
            f"cannot tell the format of {path} from its extension (.json, .ndjson, .jsonl, .csv): pass --format"
        )
    return found


def _skip_bom(path: Path) -> tuple[int, bytes]:
    """The length of a UTF-8 byte order mark at the start of the file (0 or 3), and the start after it."""
    with path.open("rb") as file:
        head = file.read(4096)
    skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    return skip, head[skip:]


def _file_parts(path: Path, *, skip: int, prefix: bytes, suffix: bytes) -> Callable[[ReadProgress], Iterator[bytes]]:
    def parts(progress: ReadProgress) -> Iterator[bytes]:
        with path.open("rb") as file:
            file.seek(skip)
            if prefix:
                yield prefix
            read = skip
            while part := file.read(PART_BYTES):
                read += len(part)
                progress(read)
                yield part
            progress(read)
            if suffix:
                yield suffix

    return parts


def json_upload(path: Path, kind: str) -> Upload:
    """A JSON file as it is: an envelope `{"<kind>": [...]}` is sent unchanged, a bare array is wrapped in one."""
    size = path.stat().st_size
    skip, head = _skip_bom(path)
    wrap = head.lstrip()[:1] == b"["
    prefix, suffix = (b'{"' + kind.encode() + b'":', b"}") if wrap else (b"", b"")
    return Upload(
        "application/json",
        size - skip + len(prefix) + len(suffix),
        size,
        _file_parts(path, skip=skip, prefix=prefix, suffix=suffix),
    )


def ndjson_upload(path: Path) -> Upload:
    """An NDJSON file as it is, one record per line."""
    size = path.stat().st_size
    skip, _ = _skip_bom(path)
    return Upload("application/x-ndjson", size - skip, size, _file_parts(path, skip=skip, prefix=b"", suffix=b""))


# CSV -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A CSV column: a field of the record, the whole `metadata` object (JSON), or one metadata key."""

    field: str
    metadata_key: str | None = None


def csv_columns(header: list[str]) -> list[Column]:
    """The columns named by the header row; a usage error for a nameless or repeated name."""
    columns: list[Column] = []
    seen: set[str] = set()
    for number, raw in enumerate(header, start=1):
        name = raw.strip()
        if not name:
            raise UsageError(f"column {number} of the CSV header has no name")
        if name in seen:
            raise UsageError(f"the CSV header names {name!r} twice")
        seen.add(name)
        if name.startswith(METADATA + "."):
            key = name[len(METADATA) + 1 :]
            if not key:
                raise UsageError(f"column {number} of the CSV header, {name!r}, names no metadata key")
            columns.append(Column(METADATA, key))
        else:
            columns.append(Column(name))
    return columns


def csv_record(columns: list[Column], row: list[str]) -> dict[str, Any]:
    """One CSV row as a record: empty cells are left out; `metadata` (JSON) and `metadata.KEY` make the metadata.

    A `metadata` cell that is not a JSON object is sent as the string it is, so that record alone fails
    (`invalid_type`) and shows up in the failed results, like any other bad field.
    """
    record: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    whole: Any = None
    for column, cell in zip(columns, row, strict=False):
        if cell == "":
            continue
        if column.metadata_key is not None:
            metadata[column.metadata_key] = cell
        elif column.field == METADATA:
            try:
                whole = orjson.loads(cell)
            except orjson.JSONDecodeError:
                whole = cell
        else:
            record[column.field] = cell
    if isinstance(whole, dict):
        record[METADATA] = {**whole, **metadata}
    elif whole is not None:
        record[METADATA] = whole
    elif metadata:
        record[METADATA] = metadata
    return record


def _csv_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row with the line it ends on."""
    reader = csv.reader(text, strict=True)
    for row in reader:
        if row:
            yield reader.line_num, row


def check_csv(path: Path) -> int:
    """Read the CSV once before sending it: a broken file is a usage error before anything is uploaded.

    Returns the number of records (non-blank rows after the header).
    """
    records = 0
    try:
        with path.open("rb") as binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
            rows = _csv_rows(text)
            first = next(rows, None)
            if first is None:
                raise UsageError(f"{path} is empty: its first row must name the fields")
            width = len(csv_columns(first[1]))
            for line, row in rows:
                if len(row) > width:
                    raise UsageError(f"{path}, line {line}: {len(row)} cells but the header names {width} columns")
                records += 1
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UsageError(f"{path} is not valid CSV: {exc}") from None
    return records


def _csv_parts(path: Path) -> Callable[[ReadProgress], Iterator[bytes]]:
    def parts(progress: ReadProgress) -> Iterator[bytes]:
        with path.open("rb") as binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
            rows = _csv_rows(text)
            first = next(rows, None)
            if first is None:
                return
            columns = csv_columns(first[1])
            buffer = bytearray()
            for _line, row in rows:
                buffer += orjson.dumps(csv_record(columns, row))
                buffer += b"\n"
                if len(buffer) >= PART_BYTES:
                    progress(binary.tell())
                    yield bytes(buffer)
                    buffer.clear()
            progress(binary.tell())
            if buffer:
                yield bytes(buffer)

    return parts


def csv_upload(path: Path) -> Upload:
    """A CSV file converted to NDJSON row by row as it is sent (header row = field names)."""
    check_csv(path)
    return Upload("application/x-ndjson", None, path.stat().st_size, _csv_parts(path))


def prepare_upload(path: Path, *, fmt: str, kind: str) -> Upload:
    """The body for FILE; usage errors (no such file, broken CSV) before any connection."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if fmt == "json":
            return json_upload(path, kind)
        if fmt == "ndjson":
            return ndjson_upload(path)
        return csv_upload(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
