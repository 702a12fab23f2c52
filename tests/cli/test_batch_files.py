"""How `pfsync push` turns a file into a batch body: JSON as it is or wrapped, NDJSON as it is, CSV converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.batch_files import PART_BYTES, Upload, csv_columns, csv_record, file_format, prepare_upload
from cli.output import UsageError


def body_of(upload: Upload) -> tuple[bytes, list[int]]:
    """The whole body, and the progress reported while producing it."""
    seen: list[int] = []
    body = b"".join(upload.parts(seen.append))
    return body, seen


def ndjson_records(body: bytes) -> list[object]:
    return [json.loads(line) for line in body.splitlines()]


def test_a_bare_json_array_is_wrapped_in_its_envelope_and_a_bom_dropped(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b'\xef\xbb\xbf\n  [{"external_id": "a", "name": "A"}]\n')

    upload = prepare_upload(path, fmt="json", kind="businesses")
    body, seen = body_of(upload)

    assert json.loads(body) == {"businesses": [{"external_id": "a", "name": "A"}]}
    assert upload.content_type == "application/json"
    assert upload.content_length == len(body)
    assert seen[-1] == path.stat().st_size


def test_a_json_envelope_is_sent_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    document = b'{"customers": [{"external_id": "c"}]}'
    path.write_bytes(document)

    body, _ = body_of(prepare_upload(path, fmt="json", kind="customers"))

    assert body == document


def test_ndjson_is_streamed_from_disk_in_parts(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    line = json.dumps({"external_id": "x" * 80, "name": "n"}).encode() + b"\n"
    path.write_bytes(line * (3 * PART_BYTES // len(line)))

    upload = prepare_upload(path, fmt="ndjson", kind="businesses")
    parts = list(upload.parts(lambda _sent: None))

    assert len(parts) >= 3
    assert max(len(part) for part in parts) <= PART_BYTES
    assert b"".join(parts) == path.read_bytes()
    assert upload.content_length == path.stat().st_size


def test_csv_header_names_fields_empty_cells_are_left_out_and_metadata_is_built() -> None:
    columns = csv_columns(["external_id", " email_address ", "metadata", "metadata.tier", "metadata.a.b"])

    assert csv_record(columns, ["c-1", "ada@example.com", '{"x": 1, "tier": "old"}', "gold", ""]) == {
        "external_id": "c-1",
        "email_address": "ada@example.com",
        "metadata": {"x": 1, "tier": "gold"},
    }
    assert csv_record(columns, ["c-2", "", "", "", "v"]) == {"external_id": "c-2", "metadata": {"a.b": "v"}}
    # A short row: the missing cells are empty.
    assert csv_record(columns, ["c-3"]) == {"external_id": "c-3"}
    # Not a JSON object: sent as it is, so the service fails that record alone (invalid_type).
    assert csv_record(columns, ["c-4", "", "not json", "", ""]) == {"external_id": "c-4", "metadata": "not json"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["external_id", ""], "column 2 of the CSV header has no name"),
        (["name", "name"], "names 'name' twice"),
        (["metadata."], "names no metadata key"),
    ],
)
def test_a_bad_csv_header_is_a_usage_error(header: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        csv_columns(header)


def test_csv_becomes_ndjson_row_by_row_with_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('\ufeffexternal_id,full_name\r\nc-1,"Ada\nLovelace"\r\n\r\nc-2,\r\n', encoding="utf-8")

    upload = prepare_upload(path, fmt="csv", kind="customers")
    body, seen = body_of(upload)

    assert upload.content_type == "application/x-ndjson"
    assert upload.content_length is None
    assert ndjson_records(body) == [{"external_id": "c-1", "full_name": "Ada\nLovelace"}, {"external_id": "c-2"}]
    assert seen[-1] == path.stat().st_size


def test_a_large_csv_is_sent_in_parts(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = 3 * PART_BYTES // 40
    path.write_text("external_id,name\n" + "".join(f"b-{i:08d},Business number {i:08d}\n" for i in range(rows)))

    parts = list(prepare_upload(path, fmt="csv", kind="businesses").parts(lambda _sent: None))

    assert len(parts) >= 3
    records = ndjson_records(b"".join(parts))
    assert len(records) == rows
    assert records[-1] == {"external_id": f"b-{rows - 1:08d}", "name": f"Business number {rows - 1:08d}"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"external_id,name\nb-1,One,extra\n", "line 2: 3 cells but the header names 2 columns"),
        (b"external_id,name\nb-1,\xff\n", "is not UTF-8"),
    ],
)
def test_a_broken_csv_is_refused_before_anything_is_sent(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    with pytest.raises(UsageError, match=message):
        prepare_upload(path, fmt="csv", kind="businesses")


def test_the_format_comes_from_the_extension_unless_given(tmp_path: Path) -> None:
    assert file_format(Path("a.JSON"), None) == "json"
    assert file_format(Path("a.jsonl"), None) == "ndjson"
    assert file_format(Path("a.csv"), None) == "csv"
    assert file_format(Path("a.txt"), "ndjson") == "ndjson"
    with pytest.raises(UsageError, match="--format"):
        file_format(Path("a.txt"), None)
    with pytest.raises(UsageError, match="no such file"):
        prepare_upload(tmp_path / "missing.json", fmt="json", kind="businesses")
