"""Submission order wins (SPEC §3 rule 7), whatever order workers happen to run in.

A batch is accepted onto a queue that no worker consumes; newer writes reach its records first; only then does a
worker start on that queue and process the older batch.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import all_results, batch_url, publishing_to, queue_length, wait_job


def _sync_customer(client: Any, business_id: str, **fields: Any) -> Any:
    response = client.post(f"/sync/businesses/{business_id}/customers", json=fields)
    assert response.status_code == 200, response.text
    return response


def test_single_sync_accepted_after_a_batch_wins_over_it(client, business, idle_queue, start_worker) -> None:
    biz = business["id"]
    before = _sync_customer(client, biz, external_id="x0", full_name="Before the batch").json()
    updated_later = _sync_customer(client, biz, external_id="x3", full_name="Before the batch").json()
    records = [
        {"external_id": f"x{i}", "full_name": "From the batch", "email_address": f"batch{i}@example.com"}
        for i in range(4)
    ]
    with publishing_to(idle_queue):
        response = client.post(batch_url(biz), json={"customers": records})
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert queue_length(idle_queue) == 1
    assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"

    created_later = _sync_customer(client, biz, external_id="x1", full_name="Single", email_address="s1@example.com")
    assert created_later.headers["Sync-Outcome"] == "created"
    replaced_later = _sync_customer(client, biz, external_id="x3", full_name="Single", email_address="s3@example.com")
    assert replaced_later.headers["Sync-Outcome"] == "replaced"

    start_worker(idle_queue, "ordering")
    job = wait_job(client, job_id)
    assert job["status"] == "completed"
    assert job["counts"]["superseded"] == 2
    results = all_results(client, job_id)
    assert [(r["external_id"], r["outcome"]) for r in results] == [
        ("x0", "replaced"),
        ("x1", "superseded"),
        ("x2", "created"),
        ("x3", "superseded"),
    ]
    assert results[0]["id"] == before["id"]
    assert results[1]["id"] == created_later.json()["id"]
    assert results[3]["id"] == updated_later["id"]
    assert results[1]["errors"] == results[3]["errors"] == []

    # The newer writes keep their data, untouched; the older batch still applied where nothing newer came.
    assert client.get(f"/customers/{created_later.json()['id']}").json() == created_later.json()
    assert client.get(f"/customers/{updated_later['id']}").json() == replaced_later.json()
    assert client.get(f"/customers/{before['id']}").json()["full_name"] == "From the batch"
    assert client.get(f"/customers/{results[2]['id']}").json()["email_address"] == "batch2@example.com"


def test_older_batch_processed_after_a_newer_one_is_superseded(
    client,
    worker,  # noqa: ARG001
    business,
    idle_queue,
    start_worker,
) -> None:
    url = batch_url(business["id"])
    r3 = _sync_customer(client, business["id"], external_id="r3", full_name="Same").json()
    with publishing_to(idle_queue):
        older = client.post(
            url, json={"customers": [{"external_id": f"r{i}", "full_name": "Older"} for i in (1, 2, 3)]}
        )
    assert older.status_code == 202
    # The newer batch creates r1 and sends r3 exactly as stored: `unchanged`, yet it is still the last write.
    newer = client.post(
        url,
        json={"customers": [{"external_id": "r1", "full_name": "Newer"}, {"external_id": "r3", "full_name": "Same"}]},
    )
    assert newer.status_code == 202
    newer_job = wait_job(client, newer.json()["id"])
    assert [r["outcome"] for r in all_results(client, newer_job["id"])] == ["created", "unchanged"]
    assert client.get(f"/jobs/{older.json()['id']}").json()["status"] == "queued"

    start_worker(idle_queue, "ordering")
    older_job = wait_job(client, older.json()["id"])
    assert older_job["status"] == "completed"
    assert (older_job["counts"]["superseded"], older_job["counts"]["created"]) == (2, 1)
    results = all_results(client, older_job["id"])
    assert [r["outcome"] for r in results] == ["superseded", "created", "superseded"]
    r1_id = all_results(client, newer_job["id"])[0]["id"]
    assert results[0]["id"] == r1_id
    assert client.get(f"/customers/{r1_id}").json()["full_name"] == "Newer"
    assert client.get(f"/customers/{r3['id']}").json() == r3

    # Being superseded once does not stick: a still newer batch replaces the record as usual.
    newest = client.post(url, json={"customers": [{"external_id": "r1", "full_name": "Newest"}]})
    assert wait_job(client, newest.json()["id"])["counts"]["replaced"] == 1
    assert client.get(f"/customers/{r1_id}").json()["full_name"] == "Newest"
