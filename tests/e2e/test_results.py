"""A job's results through a real worker: `changed_fields` on every one, found by external_id, streamed as CSV that
Python's csv module reads back to exactly the JSON values, however hostile; `Retry-After` on an unfinished job."""

from __future__ import annotations

import codecs
import csv
import io
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from core.config import settings
from core.db import session_scope
from tests.e2e.conftest import all_results, batch_url, publishing_to, wait_job

HEADER = ["index", "outcome", "id", "external_id", "changed_fields", "error_codes", "error_paths", "error_messages"]
HOSTILE_XIDS = [
    "comma,separated",
    'a "quoted" value',
    "line\nbreak",
    "windows\r\nline",
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2",
    "@SUM(A1)",
    "Zoë 🎉 \u202eevil",
    "  spaces  ",
    "tab\there",
    ";semi;colons;",
    '"',
    "",
]


def submit(client: Any, url: str, records: list[Any], **params: str) -> dict[str, Any]:
    response = client.post(url, json={"customers": records}, params=params)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["id"])


def as_cells(result: dict[str, Any]) -> list[str]:
    """A JSON result as SPEC §4 says its CSV row reads: null empty, each list one cell joined with `;`."""
    errors = result["errors"]
    return [
        str(result["index"]),
        result["outcome"],
        result["id"] or "",
        "" if result["external_id"] is None else result["external_id"],
        ";".join(result["changed_fields"]),
        ";".join(e["code"] for e in errors),
        ";".join(e["path"] or "" for e in errors),
        ";".join(e["message"] for e in errors),
    ]


def read_csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "charset=utf-8" in response.headers["content-type"]
    assert not response.content.startswith(codecs.BOM_UTF8)
    assert response.content.endswith(b"\r\n")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))


@pytest.mark.usefixtures("worker")
def test_results_as_csv_read_back_exactly_with_hostile_values(client: Any, business: dict[str, Any]) -> None:
    url = batch_url(business["id"])
    first = submit(client, url, [{"external_id": "plain", "full_name": "Old"}])
    records: list[Any] = [{"external_id": "plain", "full_name": "New", "metadata": {"k": "v"}}]  # replaced
    records += [{"external_id": xid or None, "full_name": xid} for xid in HOSTILE_XIDS]  # created ("" is null)
    records += [
        {"external_id": "dup,1"},
        {"external_id": "dup,1"},  # duplicate_in_batch, whose message quotes the value
        {"external_id": 'bad "email"', "email_address": "no,pe\n"},
        {"external_id": "odd field", 'a,b"c\nd=e': 1, "=x": 2},  # unknown fields: the paths are the names sent
        {"full_name": "no identifier"},  # an error with no path
        {"id": "cus_00000000000000000000000000"},  # not_found, with a null external_id
        "not an object",
    ]
    records += [{"external_id": f"filler-{i}"} for i in range(1100)]  # past one streamed part of 1000 rows
    job = submit(client, url, records)
    assert job["counts"]["processed"] == len(records)
    expected = all_results(client, job["id"])

    rows = read_csv(client.get(f"/jobs/{job['id']}/results", headers={"Accept": "text/csv"}))

    assert rows[0] == HEADER
    assert rows[1:] == [as_cells(r) for r in expected]
    assert rows[1][4] == "full_name;metadata"
    assert rows[1][:2] == ["0", "replaced"]
    by_index = {int(r[0]): r for r in rows[1:]}
    for i, xid in enumerate(HOSTILE_XIDS, start=1):
        assert by_index[i][3] == xid  # unaltered: no quote or prefix added against spreadsheet formulas
    failed = read_csv(
        client.get(f"/jobs/{job['id']}/results", params={"outcome": "failed"}, headers={"Accept": "text/csv"})
    )
    assert failed[1:] == [as_cells(r) for r in expected if r["outcome"] == "failed"]
    assert all(row[1] == "failed" for row in failed[1:])
    unknown = next(row for row in failed[1:] if row[3] == "odd field")
    assert unknown[5:7] == ["unknown_field;unknown_field", 'a,b"c\nd=e;=x']
    assert first["counts"]["created"] == 1


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("accept", "answered"),
    [
        ("text/csv", "text/csv"),
        ("application/json, text/csv", "application/json"),  # equal weights: the first named
        ("text/csv;q=0, application/json", "application/json"),  # q=0 is "not this"
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("application/x-ndjson;q=0.9, */*;q=0.1", "application/x-ndjson"),
        ("text/*", "text/csv"),
        ("*/*", "application/json"),
    ],
)
def test_results_come_in_the_format_the_accept_header_prefers(
    client: Any, business: dict[str, Any], accept: str, answered: str
) -> None:
    job = submit(client, batch_url(business["id"]), [{"external_id": "a"}, {"external_id": "b"}])
    response = client.get(f"/jobs/{job['id']}/results", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == answered


@pytest.mark.usefixtures("worker")
def test_results_found_by_external_id_in_every_format(
    client: Any, business: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "chunk_size", 3)  # spread over several chunks
    url = batch_url(business["id"])
    hostile = 'x,"y"\n\u00e9'
    records: list[Any] = [{"external_id": f"c-{i}"} for i in range(8)]
    records[5] = {"external_id": hostile, "email_address": "bad"}
    job = submit(client, url, records)
    path = f"/jobs/{job['id']}/results"

    page = client.get(path, params={"external_id": "c-7"}).json()
    assert [(r["index"], r["external_id"], r["changed_fields"]) for r in page["data"]] == [(7, "c-7", [])]
    assert set(page["data"][0]) == {"index", "outcome", "id", "external_id", "changed_fields", "errors"}
    assert client.get(path, params={"external_id": "c-1"}).json()["data"][0]["index"] == 1
    assert client.get(path, params={"external_id": "c-"}).json()["data"] == []  # exact, not a prefix
    assert client.get(path, params={"external_id": "c-7", "outcome": "failed"}).json()["data"] == []
    [found] = client.get(path, params={"external_id": hostile, "outcome": "failed"}).json()["data"]
    assert found["index"] == 5
    lines = client.get(path, params={"external_id": hostile}, headers={"Accept": "application/x-ndjson"})
    assert [orjson.loads(line)["index"] for line in lines.content.splitlines()] == [5]
    rows = read_csv(client.get(path, params={"external_id": hostile}, headers={"Accept": "text/csv"}))
    assert rows == [HEADER, as_cells(found)]
    empty = read_csv(client.get(path, params={"external_id": "nobody"}, headers={"Accept": "text/csv"}))
    assert empty == [HEADER]


@pytest.mark.usefixtures("worker")
def test_a_dry_runs_results_stream_with_their_changes(client: Any, business: dict[str, Any]) -> None:
    url = batch_url(business["id"])
    submit(client, url, [{"external_id": "d-1", "full_name": "Old"}])
    job = submit(client, url, [{"external_id": "d-1", "full_name": "New"}, {"external_id": "d-2"}], dry_run="true")
    lines = client.get(f"/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"}).content
    results = [orjson.loads(line) for line in lines.splitlines()]
    assert results[0]["changes"] == {"full_name": {"from": "Old", "to": "New"}}
    assert (results[1]["outcome"], results[1]["id"], "changes" in results[1]) == ("created", None, False)
    rows = read_csv(client.get(f"/jobs/{job['id']}/results", headers={"Accept": "text/csv"}))
    assert rows[1:] == [as_cells(r) for r in results]


def test_an_unfinished_job_says_when_to_ask_again_by_its_remaining_work(
    client: Any, business: dict[str, Any], idle_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks import process_chunk

    monkeypatch.setattr(settings, "chunk_size", 10)
    with publishing_to(idle_queue):  # no worker: the test runs the one chunk itself, as a worker would
        accepted = client.post(
            batch_url(business["id"]), json={"customers": [{"external_id": f"r-{i}"} for i in range(50)]}
        )
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        assert int(accepted.headers["Retry-After"]) == 1
        queued = client.get(f"/jobs/{job_id}")
        assert (queued.json()["status"], queued.headers["Retry-After"]) == ("queued", "1")

        process_chunk(job_id, 0)
        with session_scope() as session:  # as if that first chunk had taken 8 s
            session.execute(
                text("UPDATE sync_jobs SET started_at = started_at - interval '8 seconds' WHERE id = :j"), {"j": job_id}
            )
        running = client.get(f"/jobs/{job_id}")

    assert running.json()["status"] == "running"
    assert running.json()["counts"]["processed"] == 10
    # 40 records left at 10 per ~8 s: about 32 s.
    assert 32 <= int(running.headers["Retry-After"]) <= 34
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert "Retry-After" not in client.get(f"/jobs/{job_id}").headers
