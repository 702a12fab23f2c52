"""Batches through a real worker: every record judged alone, duplicates, NDJSON in, a large batch end to end."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.config import settings
from tests.e2e.conftest import all_results, batch_url, customer_count, wait_job

NDJSON = {"Content-Type": "application/x-ndjson"}


def _counts(**nonzero: int) -> dict[str, int]:
    counts = dict.fromkeys(("created", "replaced", "unchanged", "superseded", "failed", "cancelled"), 0)
    counts.update(nonzero)
    return {"total": sum(counts.values()), "processed": sum(counts.values()), **counts}


def _sync_customer(client: Any, business_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"/sync/businesses/{business_id}/customers", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_record_error_fails_only_its_record(client, worker, business) -> None:  # noqa: ARG001
    biz = business["id"]
    alice = _sync_customer(client, biz, external_id="alice", email_address="alice@example.com", full_name="Alice")
    bob = _sync_customer(client, biz, external_id="bob", email_address="bob@example.com", full_name="Bob")
    records: list[Any] = [
        {"external_id": "carol", "email_address": "carol@example.com", "full_name": "Carol"},
        {"id": "cus_00000000000000000000000000", "full_name": "Nobody"},
        {"id": alice["id"], "external_id": "bob", "full_name": "Alice"},
        {"external_id": "dave", "email_address": "BOB@Example.com"},
        {"full_name": "No identifier", "email_address": "anon@example.com"},
        {"external_id": "erin", "emali_address": "erin@example.com"},
        {
            "external_id": "frank",
            "email_address": "not-an-email",
            "phone_number": "call me",
            "full_name": "x" * 256,
            "metadata": {"note": "nul \u0000 inside"},
        },
        ["not", "an", "object"],
        None,
        {"external_id": "alice", "email_address": "alice@example.com", "full_name": "Alice Liddell"},
        {"external_id": "grace", "email_address": "grace@example.com", "metadata": {"tier": {"level": 2}}},
    ]
    response = client.post(batch_url(biz), json={"customers": records})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "completed"
    assert job["counts"] == _counts(created=2, replaced=1, failed=8)

    results = all_results(client, job["id"])
    assert [r["index"] for r in results] == list(range(len(records)))
    by_index = {r["index"]: r for r in results}

    def errors(index: int) -> list[tuple[str, str | None]]:
        return [(e["code"], e["path"]) for e in by_index[index]["errors"]]

    assert [r["outcome"] for r in results] == [
        "created", "failed", "failed", "failed", "failed", "failed", "failed", "failed", "failed", "replaced",
        "created",
    ]  # fmt: skip
    assert errors(1) == [("not_found", "id")]
    assert errors(2) == [("external_id_conflict", "external_id")]
    assert bob["id"] in by_index[2]["errors"][0]["message"]
    assert errors(3) == [("email_address_taken", "email_address")]
    assert by_index[3]["external_id"] == "dave"
    assert errors(4) == [("missing_identifier", None)]
    assert errors(5) == [("unknown_field", "emali_address")]
    assert by_index[5]["external_id"] == "erin"
    assert sorted(errors(6)) == [
        ("invalid_email", "email_address"),
        ("invalid_phone", "phone_number"),
        ("nul_character", "metadata.note"),
        ("too_long", "full_name"),
    ]
    assert errors(7) == [("invalid_record", None)]
    assert "array" in by_index[7]["errors"][0]["message"]
    assert errors(8) == [("invalid_record", None)]
    for result in results:
        assert all(e["message"] for e in result["errors"])
        assert (result["outcome"] == "failed") == bool(result["errors"])

    # The good records are stored; the failed ones changed nothing.
    carol = client.get(f"/customers/{by_index[0]['id']}").json()
    assert (carol["external_id"], carol["email_address"], carol["full_name"]) == (
        "carol",
        "carol@example.com",
        "Carol",
    )
    assert client.get(f"/customers/{alice['id']}").json()["full_name"] == "Alice Liddell"
    assert client.get(f"/customers/{alice['id']}").json()["external_id"] == "alice"
    assert client.get(f"/customers/{bob['id']}").json() == bob
    grace = client.get(f"/customers/{by_index[10]['id']}").json()
    assert grace["metadata"] == {"tier": {"level": 2}}
    assert customer_count(biz) == 4
    for external_id in ("dave", "erin", "frank"):
        listed = client.get(f"/businesses/{biz}/customers", params={"external_id": external_id}).json()
        assert listed["data"] == []


def test_businesses_batch_errors_and_replacements(client, worker) -> None:  # noqa: ARG001
    existing = client.post("/sync/businesses", json={"external_id": "shop-1", "name": "Shop", "metadata": {"a": 1}})
    taken = client.post("/sync/businesses", json={"external_id": "shop-2", "name": "Other shop"}).json()
    records = [
        {"external_id": "shop-1", "name": "Shop renamed"},
        {"id": existing.json()["id"], "external_id": "shop-2", "name": "Shop"},
        {"external_id": "shop-3"},
        {"name": "No identifier"},
        {"external_id": "shop-4", "name": "Shop four", "email_address": "x@example.com"},
        {"external_id": "shop-5", "name": "Shop five"},
    ]
    job = wait_job(client, client.post("/sync/businesses/batch", json={"businesses": records}).json()["id"])
    assert job["type"] == "businesses"
    assert job["business_id"] is None
    assert job["counts"] == _counts(created=1, replaced=1, failed=4)
    results = all_results(client, job["id"])
    assert [(r["outcome"], [e["code"] for e in r["errors"]]) for r in results] == [
        ("replaced", []),
        ("failed", ["external_id_conflict"]),
        ("failed", ["required"]),
        ("failed", ["missing_identifier"]),
        ("failed", ["unknown_field"]),
        ("created", []),
    ]
    assert results[2]["errors"][0]["path"] == "name"
    # Create or replace: metadata not sent is blanked.
    stored = client.get(f"/businesses/{existing.json()['id']}").json()
    assert (stored["name"], stored["metadata"], stored["external_id"]) == ("Shop renamed", {}, "shop-1")
    assert client.get(f"/businesses/{taken['id']}").json() == taken


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_duplicates_in_one_batch_all_fail_naming_the_others(client, worker, business, monkeypatch, fmt) -> None:  # noqa: ARG001
    # Chunks of 2: duplicates are found across chunks stored before the later copies arrived.
    monkeypatch.setattr(settings, "chunk_size", 2)
    biz = business["id"]
    known = _sync_customer(client, biz, external_id="known", email_address="known@example.com")
    records = [
        {"external_id": "x1", "email_address": "one@example.com"},  # 0: fine
        {"external_id": "dup", "email_address": "a@example.com"},  # 1: external_id shared with 3 and 5
        {"external_id": "y1", "email_address": "Shared@Example.com"},  # 2: email shared with 4
        {"external_id": "dup", "email_address": "b@example.com"},  # 3
        {"external_id": "y2", "email_address": "shared@example.COM"},  # 4
        {"external_id": "dup", "email_address": "c@example.com"},  # 5
        {"id": known["id"], "full_name": "First"},  # 6: id shared with 7
        {"id": known["id"], "full_name": "Second"},  # 7
        {"external_id": "x2", "email_address": "two@example.com"},  # 8: fine
    ]
    if fmt == "json":
        response = client.post(batch_url(biz), json={"customers": records})
    else:
        response = client.post(batch_url(biz), content=b"\n".join(map(orjson.dumps, records)), headers=NDJSON)
    job = wait_job(client, response.json()["id"])
    assert job["counts"] == _counts(created=2, failed=7)
    results = all_results(client, job["id"])
    assert [r["outcome"] for r in results] == ["created"] + ["failed"] * 7 + ["created"]
    for index, others, key in (
        (1, "3, 5", "external_id"),
        (3, "1, 5", "external_id"),
        (5, "1, 3", "external_id"),
        (2, "4", "email_address"),
        (4, "2", "email_address"),
        (6, "7", "id"),
        (7, "6", "id"),
    ):
        (error,) = results[index]["errors"]
        assert error["code"] == "duplicate_in_batch"
        assert error["path"] == key
        assert f"index {others} " in error["message"], error["message"]
        assert results[index]["external_id"] == records[index].get("external_id")
    # None of the duplicates was applied, not even the first of them.
    assert client.get(f"/customers/{known['id']}").json() == known
    assert customer_count(biz) == 3


def test_ndjson_batch_skips_blank_lines_and_fails_bad_lines_alone(client, worker, business) -> None:  # noqa: ARG001
    lines = [
        b'{"external_id": "n0", "email_address": "n0@example.com"}',
        b"",
        b'{"external_id": "n1", "email_address": oops}',
        b"   ",
        b'{"external_id": "n2", "full_name": "Ann \\u00e9 \xe2\x9c\x93"}',
        b"[1, 2]",
        b'{"external_id": "n3"}',
        b"",
    ]
    body = b"\r\n".join(lines)
    response = client.post(batch_url(business["id"]), content=body, headers=NDJSON)
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["counts"] == _counts(created=3, failed=2)
    results = all_results(client, job["id"])
    assert [(r["index"], r["outcome"]) for r in results] == [
        (0, "created"),
        (1, "failed"),
        (2, "created"),
        (3, "failed"),
        (4, "created"),
    ]
    assert results[1]["errors"][0]["code"] == "malformed_record"
    assert "line 3" in results[1]["errors"][0]["message"]
    assert results[3]["errors"][0]["code"] == "invalid_record"
    assert [r["external_id"] for r in results if r["outcome"] == "created"] == ["n0", "n2", "n3"]
    assert client.get(f"/customers/{results[2]['id']}").json()["full_name"] == "Ann é ✓"


def _customers(count: int, *, suffix: str = "", reorder_metadata: bool = False) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        metadata = {"plan": "gold" if i % 3 else "silver", "visits": i % 17, "tags": ["a", str(i % 5)]}
        if reorder_metadata:
            metadata = dict(reversed(metadata.items()))
        records.append(
            {
                "external_id": f"c-{i:05d}",
                "email_address": f"Customer.{i}@Example.com",
                "phone_number": f"+1 555 {i:07d}",
                "full_name": f"Customer {i}{suffix if i % 2 else ''}",
                "metadata": metadata,
            }
        )
    return records


def test_large_batch_created_then_unchanged_then_replaced(client, worker, business) -> None:  # noqa: ARG001
    biz = business["id"]
    count = 20_000

    def submit(records: list[dict[str, Any]]) -> dict[str, Any]:
        response = client.post(
            batch_url(biz), content=orjson.dumps({"customers": records}), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.text
        assert response.json()["counts"]["total"] == count
        return wait_job(client, response.json()["id"], timeout=120)

    first = submit(_customers(count))
    assert first["status"] == "completed"
    assert first["counts"] == _counts(created=count)
    assert customer_count(biz) == count
    sample = client.get(f"/businesses/{biz}/customers", params={"external_id": "c-12345"}).json()["data"][0]
    assert sample["email_address"] == "Customer.12345@Example.com"
    assert sample["metadata"] == {"plan": "silver", "visits": 12345 % 17, "tags": ["a", "0"]}

    # The same data again (metadata keys in another order): nothing is written.
    again = submit(_customers(count, reorder_metadata=True))
    assert again["counts"] == _counts(unchanged=count)
    assert client.get(f"/customers/{sample['id']}").json() == sample

    # Every other record modified.
    modified = submit(_customers(count, suffix=" Jr."))
    assert modified["counts"] == _counts(replaced=count // 2, unchanged=count // 2)
    results = all_results(client, modified["id"])
    assert len(results) == count
    assert [r["index"] for r in results] == list(range(count))
    assert all(r["outcome"] == ("replaced" if r["index"] % 2 else "unchanged") for r in results)
    assert all(r["external_id"] == f"c-{r['index']:05d}" for r in results)
    changed = client.get(f"/customers/{sample['id']}").json()
    assert changed["full_name"] == "Customer 12345 Jr."
    assert changed["updated_at"] > sample["updated_at"]
    assert customer_count(biz) == count
