"""Batches through a real worker: partial success, results in input order."""

from __future__ import annotations

from tests.e2e.conftest import wait_job


def test_batch_partial_success_reports_every_record_in_input_order(client, worker) -> None:  # noqa: ARG001
    records: list[object] = [{"external_id": f"b{i}", "name": f"Business {i}"} for i in range(5)]
    records.insert(2, {"external_id": "bad", "name": ""})
    records.insert(4, "not an object")
    response = client.post("/sync/businesses/batch", json={"businesses": records})
    assert response.status_code == 202
    assert response.headers["Location"] == f"/jobs/{response.json()['id']}"
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "completed"
    assert job["counts"] | {} == {
        "total": 7, "processed": 7, "created": 5, "replaced": 0, "unchanged": 0,
        "superseded": 0, "failed": 2, "cancelled": 0,
    }  # fmt: skip
    results = client.get(f"/jobs/{job['id']}/results").json()["data"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["outcome"] for r in results] == [
        "created",
        "created",
        "failed",
        "created",
        "failed",
        "created",
        "created",
    ]
    assert results[2]["errors"][0]["code"] == "too_short"
    assert results[2]["errors"][0]["path"] == "name"
    assert results[2]["external_id"] == "bad"
    assert results[4]["errors"][0]["code"] == "invalid_record"
