"""Every bad value in a batch fails its own record, with a clear error, and nothing else (through a real worker)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.e2e.conftest import all_results, batch_url, wait_job
from tests.hostile import BAD_RECORDS


def test_each_bad_value_fails_its_record_alone_with_a_clear_error(client, worker, business) -> None:  # noqa: ARG001
    records: list[Any] = []
    expected: dict[int, tuple[str, str | None]] = {}
    good: list[int] = []
    for n, (_label, record, code, path) in enumerate(BAD_RECORDS):
        # Each bad record between two good ones; external_ids made unique so no duplicate rule is involved.
        good.append(len(records))
        records.append({"external_id": f"good-{n}", "full_name": f"Good {n}"})
        bad = dict(record)
        if isinstance(bad.get("external_id"), str) and bad["external_id"] == "x":
            bad["external_id"] = f"bad-{n}"
        expected[len(records)] = (code, path)
        records.append(bad)
    for element in [42, "a string", ["a", "list"], None, True, 1.5]:
        expected[len(records)] = ("invalid_record", None)
        records.append(element)
    good.append(len(records))
    records.append({"external_id": "good-last", "email_address": "last@example.com"})

    response = client.post(batch_url(business["id"]), json={"customers": records})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "completed"
    assert job["counts"]["created"] == len(good)
    assert job["counts"]["failed"] == len(expected)

    results = all_results(client, job["id"])
    assert [r["index"] for r in results] == list(range(len(records)))
    for index, (code, path) in expected.items():
        result = results[index]
        assert result["outcome"] == "failed", (index, records[index], result)
        assert (code, path) in [(e["code"], e["path"]) for e in result["errors"]], (records[index], result)
        assert all(e["message"] for e in result["errors"])
    for index in good:
        assert results[index]["outcome"] == "created", results[index]


def test_ndjson_lines_with_bad_bytes_fail_alone(client, worker, business) -> None:  # noqa: ARG001
    lines = [
        orjson.dumps({"external_id": "n-0"}),
        b'{"external_id": "n-1", "full_name": "\xff\xfe"}',  # invalid UTF-8
        orjson.dumps({"external_id": "n-2"}),
        b'{"external_id": "n-3", "full_name": "\\ud800"}',  # a lone surrogate
        b'{"external_id": "n-4", "metadata": ' + b"[" * 2000 + b"]" * 2000 + b"}",  # nested too deep
        b'{"external_id": "n-5", "metadata": {"n": 1e999}}',  # a number beyond a double
        b"\x00\x01\x02",
        orjson.dumps({"external_id": "n-7", "full_name": "Seven"}),
    ]
    response = client.post(
        batch_url(business["id"]), content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    outcomes = [(r["outcome"], [e["code"] for e in r["errors"]]) for r in all_results(client, job["id"])]
    malformed = ("failed", ["malformed_record"])
    assert outcomes == [
        ("created", []), malformed, ("created", []), malformed, malformed, malformed, malformed, ("created", []),
    ]  # fmt: skip
