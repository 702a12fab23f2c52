"""What a batch request is refused for as a whole, and idempotent replays of an accepted one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from core.config import settings
from tests.conftest import assert_problem
from tests.e2e.conftest import batch_url, wait_job

NDJSON = {"Content-Type": "application/x-ndjson"}


def _jobs(client: Any) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get("/jobs").json()["data"]
    return data


def _customers(count: int) -> list[dict[str, Any]]:
    return [{"external_id": f"c{i}", "full_name": f"Customer {i}"} for i in range(count)]


def test_more_records_than_the_limit_is_413_naming_it(client, business, monkeypatch) -> None:
    monkeypatch.setattr(settings, "max_batch_records", 5)
    # Small chunks: a streamed NDJSON batch has stored some before it passes the limit, and must leave none.
    monkeypatch.setattr(settings, "chunk_size", 2)
    url = batch_url(business["id"])

    body = assert_problem(client.post(url, json={"customers": _customers(6)}), 413, "too_many_records")
    assert "5" in body["detail"]
    assert "PFSYNC_MAX_BATCH_RECORDS" in body["detail"]

    ndjson = b"\n".join(orjson.dumps(r) for r in _customers(6))
    body = assert_problem(client.post(url, content=ndjson, headers=NDJSON), 413, "too_many_records")
    assert "PFSYNC_MAX_BATCH_RECORDS" in body["detail"]

    # Blank lines are not records: five records with blank lines between them are accepted.
    five = b"\n\n".join(orjson.dumps(r) for r in _customers(5))
    assert client.post(url, content=five, headers=NDJSON).status_code == 202
    assert client.post(url, json={"customers": _customers(5)}).status_code == 202
    assert len(_jobs(client)) == 2


def test_body_over_the_byte_limit_is_413_naming_it(client, business, monkeypatch) -> None:
    monkeypatch.setattr(settings, "max_body_bytes", 2048)
    url = batch_url(business["id"])
    big = {"customers": [{"external_id": f"c{i}", "full_name": "x" * 100} for i in range(30)]}

    body = assert_problem(client.post(url, json=big), 413, "body_too_large")
    assert "2048" in body["detail"]
    assert "PFSYNC_MAX_BODY_BYTES" in body["detail"]

    # Streamed without a Content-Length: still refused once the limit is passed.
    def stream() -> Iterator[bytes]:
        yield orjson.dumps(big)

    assert_problem(
        client.post(url, content=stream(), headers={"Content-Type": "application/json"}), 413, "body_too_large"
    )

    # NDJSON is stored chunk by chunk as it arrives: a body refused half-way leaves no job behind.
    monkeypatch.setattr(settings, "chunk_size", 2)
    lines = [orjson.dumps(r) for r in big["customers"]]

    def ndjson_stream() -> Iterator[bytes]:
        for line in lines:
            yield line + b"\n"

    assert_problem(client.post(url, content=ndjson_stream(), headers=NDJSON), 413, "body_too_large")
    assert _jobs(client) == []
    small = {"customers": _customers(3)}
    assert len(orjson.dumps(small)) < 2048
    assert client.post(url, json=small).status_code == 202


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"customers": []}', "application/json"),
        (b"\n\n  \n", "application/x-ndjson"),
    ],
)
def test_empty_batch_is_422(client, business, content, content_type) -> None:
    response = client.post(batch_url(business["id"]), content=content, headers={"Content-Type": content_type})
    assert_problem(response, 422, "empty_batch")
    assert _jobs(client) == []


def test_unparseable_body_is_400_with_line_and_column(client, business) -> None:
    body = b'{\n "customers": [\n  {"external_id": "x"},\n  oops\n ]\n}'
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 400, "malformed_body")
    assert "line 4 column 3" in problem["detail"]
    assert_problem(
        client.post("/sync/businesses/batch", content=b"", headers={"Content-Type": "application/json"}),
        400,
        "malformed_body",
    )
    assert _jobs(client) == []


@pytest.mark.parametrize(
    "document",
    [
        {"customers": {"external_id": "x"}},
        {"businesses": [{"external_id": "x", "name": "n"}]},
        [{"external_id": "x"}],
        {"customers": None},
        "customers",
    ],
)
def test_envelope_without_the_list_is_422_invalid_envelope(client, business, document) -> None:
    problem = assert_problem(client.post(batch_url(business["id"]), json=document), 422, "invalid_envelope")
    assert problem["errors"][0]["path"] == "customers"
    assert _jobs(client) == []


def test_unknown_business_and_another_partners_business_are_404_alike(client, other_partner) -> None:
    theirs = client.post("/sync/businesses", json={"external_id": "b", "name": "Theirs"}, auth=other_partner.auth)
    assert theirs.status_code == 200
    records = {"customers": [{"external_id": "x"}]}
    missing = client.post(batch_url("biz_00000000000000000000000000"), json=records)
    foreign = client.post(batch_url(theirs.json()["id"]), json=records)
    assert_problem(missing, 404, "not_found")
    assert_problem(foreign, 404, "not_found")
    assert foreign.json() == missing.json()
    assert _jobs(client) == []


@pytest.mark.parametrize("content_type", ["text/csv", "application/xml", "text/plain"])
def test_unsupported_content_type_is_415(client, business, content_type) -> None:
    response = client.post(
        batch_url(business["id"]), content=b"external_id\nx\n", headers={"Content-Type": content_type}
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert _jobs(client) == []


def test_accepted_batch_answers_202_with_the_job(client, business) -> None:
    response = client.post(batch_url(business["id"]), json={"customers": _customers(3)})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    assert job["id"].startswith("job_")
    assert job["object"] == "sync_job"
    assert job["type"] == "customers"
    assert job["business_id"] == business["id"]
    assert job["status"] in ("queued", "running", "completed")
    assert job["counts"]["total"] == 3
    assert job["links"] == {"self": f"/jobs/{job['id']}", "results": f"/jobs/{job['id']}/results"}
    assert client.get(f"/jobs/{job['id']}").json()["id"] == job["id"]


def test_idempotent_replay_returns_the_same_job_and_reuse_is_422(client, worker, business) -> None:  # noqa: ARG001
    url = batch_url(business["id"])
    body = orjson.dumps({"customers": _customers(4)})
    headers = {"Content-Type": "application/json", "Idempotency-Key": "batch-2026-11-28"}

    first = client.post(url, content=body, headers=headers)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    job = wait_job(client, first.json()["id"])
    assert job["counts"]["created"] == 4

    replay = client.post(url, content=body, headers=headers)
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert replay.headers["Location"] == first.headers["Location"]
    assert [j["id"] for j in _jobs(client)] == [job["id"]]

    other_body = orjson.dumps({"customers": _customers(5)})
    reused = client.post(url, content=other_body, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    assert [j["id"] for j in _jobs(client)] == [job["id"]]
    # The same with an NDJSON body, which is read as it streams in.
    ndjson = b"\n".join(orjson.dumps(r) for r in _customers(6))
    ndjson_headers = NDJSON | {"Idempotency-Key": "batch-2026-11-28-ndjson"}
    streamed = client.post(url, content=ndjson, headers=ndjson_headers)
    assert streamed.status_code == 202
    replayed = client.post(url, content=ndjson, headers=ndjson_headers)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == streamed.json()
    assert_problem(client.post(url, content=ndjson + b"\n{}", headers=ndjson_headers), 422, "idempotency_key_reused")
    assert [j["id"] for j in _jobs(client)] == [streamed.json()["id"], job["id"]]
    wait_job(client, streamed.json()["id"])

    # The replays created nothing twice.
    assert wait_job(client, job["id"])["counts"]["created"] == 4
    listed = client.get(f"/businesses/{business['id']}/customers").json()["data"]
    assert len(listed) == 6


@pytest.mark.parametrize("depth", [65, 100_000, 10_000_000])
def test_a_json_batch_nested_past_64_levels_is_400_before_it_is_built(client, business, depth) -> None:
    record = b'{"external_id": "deep", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    body = b'{"customers": [' + record + b"]}"
    problem = assert_problem(
        client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"}),
        400,
        "malformed_body",
    )
    assert "deeper than 64 levels" in problem["detail"]
    assert "line 1" in problem["detail"]
    assert _jobs(client) == []


def test_a_string_with_a_lone_surrogate_is_400_not_silently_changed(client, business) -> None:
    body = b'{"customers": [{"external_id": "s", "full_name": "a\\ud800b"}]}'
    assert_problem(
        client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"}),
        400,
        "malformed_body",
    )
    assert _jobs(client) == []


def test_a_json_batch_nested_within_64_levels_is_accepted(client, business) -> None:
    record = {"external_id": "nested", "metadata": {"a": [[[[{"b": [1, {"c": "[[[[ {{ not brackets"}]}]]]]}}
    response = client.post(batch_url(business["id"]), json={"customers": [record, {"external_id": "flat"}]})
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["total"] == 2


def test_a_failure_while_waiting_after_commit_still_answers_the_202(client, worker, business, monkeypatch) -> None:  # noqa: ARG001
    import api.routes.batch

    calls: list[object] = []

    def broken(*args: Any) -> dict[str, Any]:
        calls.append(args)
        raise RuntimeError("the wait broke")

    monkeypatch.setattr(api.routes.batch, "compat_body", broken)
    headers = {"Prefer": "wait=10", "Idempotency-Key": "wait-breaks"}
    url = batch_url(business["id"])
    first = client.post(url, json={"customers": _customers(2)}, headers=headers)
    assert first.status_code == 202, first.text
    assert calls, "the job finished within the wait, so its answer was built (and broke)"
    again = client.post(url, json={"customers": _customers(2)}, headers=headers)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(_jobs(client)) == 1
