"""Every bad value in a batch fails its own record, with a clear error, and nothing else (through a real worker)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import assert_problem
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
    invalid_number = ("failed", ["invalid_number"])
    assert outcomes == [
        ("created", []), malformed, ("created", []), malformed, malformed, invalid_number, malformed, ("created", []),
    ]  # fmt: skip


NUMBERS_BEYOND_RANGE = [
    b"1180591620717411303424",  # 2**70
    b"9223372036854775808",  # 2**63
    b"-9223372036854775809",
    b"1e400",
    b"-1e400",
]


def test_numbers_json_cannot_carry_exactly_fail_their_record_in_either_format(client, worker, business) -> None:  # noqa: ARG001
    records = [b'{"external_id": "ok-0", "metadata": {"n": 9223372036854775807, "f": 1.5e300}}']
    records += [
        b'{"external_id": "num-%d", "metadata": {"n": %s}}' % (i, n) for i, n in enumerate(NUMBERS_BEYOND_RANGE)
    ]
    records.append(b'{"external_id": "ok-1", "metadata": {"n": -9223372036854775808}}')
    bodies = {
        "application/json": b'{"customers": [' + b", ".join(records) + b"]}",
        "application/x-ndjson": b"\n".join(records),
    }
    for content_type, body in bodies.items():
        response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": content_type})
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["id"])
        results = all_results(client, job["id"])
        assert [r["outcome"] for r in results] == ["created", *["failed"] * len(NUMBERS_BEYOND_RANGE), "created"] or [
            r["outcome"] for r in results
        ] == ["unchanged", *["failed"] * len(NUMBERS_BEYOND_RANGE), "unchanged"], (content_type, results)
        for result in results[1:-1]:
            assert "invalid_number" in [e["code"] for e in result["errors"]], (content_type, result)
            assert result["external_id"].startswith("num-")
    stored = client.get(f"/businesses/{business['id']}/customers", params={"external_id": "ok-0"}).json()["data"]
    assert stored[0]["metadata"] == {"n": 9223372036854775807, "f": 1.5e300}
    assert client.get(f"/businesses/{business['id']}/customers").status_code == 200


def test_an_ndjson_line_over_a_mebibyte_fails_alone(client, worker, business) -> None:  # noqa: ARG001
    huge = b'{"external_id": "huge", "full_name": "' + b"x" * (1024 * 1024) + b'"}'
    body = b"\n".join([orjson.dumps({"external_id": "before"}), huge, orjson.dumps({"external_id": "after"})])
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    results = all_results(client, wait_job(client, response.json()["id"])["id"])
    assert [(r["outcome"], [e["code"] for e in r["errors"]]) for r in results] == [
        ("created", []),
        ("failed", ["record_too_large"]),
        ("created", []),
    ]


def test_a_json_record_over_a_mebibyte_fails_alone(client, worker, business) -> None:  # noqa: ARG001
    """As an NDJSON line does: the records around it are synced, and its result is labelled by its external_id."""
    huge = {"external_id": "huge", "metadata": {"text": "x" * (1024 * 1024)}}
    body = orjson.dumps({"customers": [{"external_id": "before"}, huge, {"external_id": "after"}]})
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    results = all_results(client, wait_job(client, response.json()["id"])["id"])
    assert [(r["outcome"], r["external_id"], [e["code"] for e in r["errors"]]) for r in results] == [
        ("created", "before", []),
        ("failed", "huge", ["record_too_large"]),
        ("created", "after", []),
    ]


def test_a_json_batch_holding_a_record_over_8_mebibytes_is_refused_as_it_is_read(client, business) -> None:
    """Parsing it whole would cost the API several times its size: the batch is refused at 8 MiB of it."""
    huge = {"external_id": "huge", "metadata": {f"k{i}": i for i in range(700_000)}}  # ~11 MiB, 700 000 values
    body = orjson.dumps({"customers": [{"external_id": "before"}, huge]})
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 413, "record_too_large")
    assert "8388608 bytes" in problem["detail"]
    listed = client.get(f"/businesses/{business['id']}/customers", params={"external_id": "before"}).json()
    assert listed["data"] == []  # nothing of the batch was stored


@pytest.mark.parametrize("depth", [17, 252, 253, 300])
def test_ndjson_metadata_nested_too_deep_fails_alone(client, worker, business, depth) -> None:  # noqa: ARG001
    metadata = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    lines = [b'{"external_id": "deep", "metadata": ' + metadata + b"}", orjson.dumps({"external_id": "flat"})]
    response = client.post(
        batch_url(business["id"]), content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    results = all_results(client, wait_job(client, response.json()["id"])["id"])
    assert [(r["outcome"], [e["code"] for e in r["errors"]]) for r in results] == [
        ("failed", ["metadata_too_deep"]),
        ("created", []),
    ]
    assert client.get(f"/businesses/{business['id']}/customers").status_code == 200


def test_a_duplicate_that_json_cannot_carry_reports_both_errors(client, worker, business) -> None:  # noqa: ARG001
    body = (
        b'{"customers": [{"external_id": "twice", "metadata": {"n": 1180591620717411303424}},'
        b' {"external_id": "twice"}, 1.5]}'
    )
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    results = all_results(client, wait_job(client, response.json()["id"])["id"])
    assert [(r["outcome"], [e["code"] for e in r["errors"]]) for r in results] == [
        ("failed", ["invalid_number", "duplicate_in_batch"]),
        ("failed", ["duplicate_in_batch"]),
        ("failed", ["invalid_record"]),
    ]
    assert results[2]["errors"][0]["message"] == "a record must be a JSON object, not a number"
