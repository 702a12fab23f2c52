"""Jobs through a real worker: results (paged, filtered, streamed), lists, scoping, cancel, `Prefer: wait`."""

from __future__ import annotations

import time
from typing import Any

import orjson

from core.config import settings
from tests.e2e.conftest import all_results, batch_url, customer_count, publishing_to, queue_length, wait_for, wait_job

FINISHED = ("completed", "cancelled", "failed")


def _submit(client: Any, url: str, key: str, records: list[Any], **headers: str) -> Any:
    response = client.post(url, json={key: records}, headers=headers)
    assert response.status_code in (200, 202), response.text
    return response


def _run(client: Any, url: str, key: str, records: list[Any]) -> dict[str, Any]:
    """Submit a batch and wait until it finished."""
    return wait_job(client, _submit(client, url, key, records).json()["id"])


def _ndjson(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def test_results_are_paged_filtered_and_streamed_in_input_order(client, worker, business, monkeypatch) -> None:  # noqa: ARG001
    url = batch_url(business["id"])
    existing = [{"external_id": f"e{i}", "full_name": f"Existing {i}"} for i in range(10)]
    _run(client, url, "customers", existing)

    # Small chunks, so the results span chunks that the worker's two processes finish in any order.
    monkeypatch.setattr(settings, "chunk_size", 7)
    records: list[dict[str, Any]] = []
    expected: list[str] = []
    for i in range(25):
        if i % 5 == 0:
            records.append({"external_id": f"e{i}", "email_address": "not an email"})
            expected.append("failed")
        elif i < 10:
            records.append(existing[i])
            expected.append("unchanged")
        else:
            records.append({"external_id": f"e{i}", "full_name": f"New {i}"})
            expected.append("created")
    job = wait_job(client, _submit(client, url, "customers", records).json()["id"])
    assert job["counts"]["processed"] == 25

    path = f"/jobs/{job['id']}/results"
    first = client.get(path, params={"limit": 10}).json()
    assert first["object"] == "list"
    assert [r["index"] for r in first["data"]] == list(range(10))
    assert (first["has_more"], first["next_cursor"]) == (True, "9")
    second = client.get(path, params={"limit": 10, "starting_after": first["next_cursor"]}).json()
    assert [r["index"] for r in second["data"]] == list(range(10, 20))
    third = client.get(path, params={"limit": 10, "starting_after": second["next_cursor"]}).json()
    assert [r["index"] for r in third["data"]] == list(range(20, 25))
    assert (third["has_more"], third["next_cursor"]) == (False, None)
    results = first["data"] + second["data"] + third["data"]
    assert [r["outcome"] for r in results] == expected
    assert [r["external_id"] for r in results] == [f"e{i}" for i in range(25)]
    assert set(results[0]) == {"index", "outcome", "id", "external_id", "changed_fields", "errors"}

    failed: list[int] = []
    cursor = None
    while True:
        params = {"outcome": "failed", "limit": 2} | ({"starting_after": cursor} if cursor else {})
        page = client.get(path, params=params).json()
        assert len(page["data"]) <= 2
        failed += [r["index"] for r in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert failed == [0, 5, 10, 15, 20]
    assert [r["index"] for r in all_results(client, job["id"], outcome="unchanged")] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert all_results(client, job["id"], outcome="superseded") == []

    streamed = _ndjson(client.get(path, params={"limit": 2}, headers={"Accept": "application/x-ndjson"}))
    assert streamed == results
    created = _ndjson(client.get(path, params={"outcome": "created"}, headers={"Accept": "application/x-ndjson"}))
    assert [r["index"] for r in created] == list(range(11, 15)) + list(range(16, 20)) + list(range(21, 25))
    assert created == [r for r in results if r["outcome"] == "created"]

    for bad in ({"outcome": "exploded"}, {"limit": 0}, {"limit": 1001}, {"starting_after": "abc"}):
        response = client.get(path, params=bad)
        assert response.status_code == 422, bad
        assert response.json()["code"] == "validation_error"


def test_jobs_list_filters_by_status_and_type_newest_first(client, worker, business, idle_queue, other_partner) -> None:  # noqa: ARG001
    businesses_job = _run(client, "/sync/businesses/batch", "businesses", [{"external_id": "b1", "name": "B"}])
    customers_job = _run(client, batch_url(business["id"]), "customers", [{"external_id": "c1"}])
    with publishing_to(idle_queue):
        queued_job = _submit(client, batch_url(business["id"]), "customers", [{"external_id": "c2"}]).json()
        cancelled_job = _submit(client, batch_url(business["id"]), "customers", [{"external_id": "c3"}]).json()
    assert client.post(f"/jobs/{cancelled_job['id']}/cancel").status_code == 200

    def ids(**params: Any) -> list[str]:
        page = client.get("/jobs", params=params).json()
        assert page["object"] == "list"
        return [job["id"] for job in page["data"]]

    everything = [cancelled_job["id"], queued_job["id"], customers_job["id"], businesses_job["id"]]
    assert ids() == everything
    assert ids(status="completed") == [customers_job["id"], businesses_job["id"]]
    assert ids(status="queued") == [queued_job["id"]]
    assert ids(status="cancelled") == [cancelled_job["id"]]
    assert ids(status="running") == []
    assert ids(type="businesses") == [businesses_job["id"]]
    assert ids(type="customers") == everything[:3]
    assert ids(type="customers", status="completed") == [customers_job["id"]]

    first = client.get("/jobs", params={"limit": 3}).json()
    assert [j["id"] for j in first["data"]] == everything[:3]
    assert (first["has_more"], first["next_cursor"]) == (True, everything[2])
    second = client.get("/jobs", params={"limit": 3, "starting_after": first["next_cursor"]}).json()
    assert [j["id"] for j in second["data"]] == everything[3:]
    assert (second["has_more"], second["next_cursor"]) == (False, None)

    assert client.get("/jobs", auth=other_partner.auth).json()["data"] == []
    assert client.get("/jobs", params={"status": "done"}).status_code == 422
    assert client.get("/jobs", params={"type": "orders"}).status_code == 422
    client.post(f"/jobs/{queued_job['id']}/cancel")


def test_another_partners_job_is_answered_like_a_missing_one(client, business, idle_queue, other_partner) -> None:
    with publishing_to(idle_queue):
        job = _submit(client, batch_url(business["id"]), "customers", [{"external_id": "c1"}]).json()
    missing = "job_00000000000000000000000000"
    for method, suffix in (("GET", ""), ("GET", "/results"), ("POST", "/cancel")):
        theirs = client.request(method, f"/jobs/{job['id']}{suffix}", auth=other_partner.auth)
        nothing = client.request(method, f"/jobs/{missing}{suffix}", auth=other_partner.auth)
        assert theirs.status_code == 404, (method, suffix)
        assert theirs.headers["Content-Type"] == "application/problem+json"
        assert theirs.json() == nothing.json()
        assert theirs.json()["code"] == "not_found"
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"
    assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_cancel_a_queued_job_ends_every_record_cancelled(client, business, idle_queue) -> None:
    records: list[Any] = [{"external_id": f"c{i}"} for i in range(2500)]
    records[1200] = "not an object"
    with publishing_to(idle_queue):
        job = _submit(client, batch_url(business["id"]), "customers", records).json()
    assert job["status"] == "queued"

    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert cancelled["counts"] | {} == {
        "total": 2500, "processed": 2500, "created": 0, "replaced": 0, "unchanged": 0,
        "superseded": 0, "failed": 1, "cancelled": 2499,
    }  # fmt: skip
    assert client.get(f"/jobs/{job['id']}").json() == cancelled
    results = all_results(client, job["id"])
    assert [r["index"] for r in results] == list(range(2500))
    assert results[1200]["errors"][0]["code"] == "invalid_record"
    assert {r["outcome"] for i, r in enumerate(results) if i != 1200} == {"cancelled"}
    assert customer_count(business["id"]) == 0

    again = client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "job_finished"


def test_cancelling_a_job_lets_the_partners_waiting_job_start(
    client,
    worker,  # noqa: ARG001
    business,
    idle_queue,
    monkeypatch,
) -> None:
    monkeypatch.setattr(settings, "max_active_jobs_per_partner", 1)
    url = batch_url(business["id"])
    with publishing_to(idle_queue):
        stuck = _submit(client, url, "customers", [{"external_id": "c1"}]).json()
    waiting = _submit(client, url, "customers", [{"external_id": "c2"}]).json()
    time.sleep(1)
    assert client.get(f"/jobs/{waiting['id']}").json()["status"] == "queued"

    assert client.post(f"/jobs/{stuck['id']}/cancel").json()["status"] == "cancelled"
    # No sweeper runs here: the cancel itself must hand the freed slot's work to the workers.
    job = wait_job(client, waiting["id"], timeout=15)
    assert job["status"] == "completed"
    assert job["counts"]["created"] == 1


def test_cancel_a_finished_job_is_409(client, worker, business) -> None:  # noqa: ARG001
    job = _run(client, batch_url(business["id"]), "customers", [{"external_id": "c1"}])
    assert job["status"] == "completed"
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "job_finished"
    assert client.get(f"/jobs/{job['id']}").json() == job


def test_cancel_mid_job_keeps_processed_records_and_cancels_the_rest(
    client, business, idle_queue, start_worker, monkeypatch
) -> None:
    monkeypatch.setattr(settings, "chunk_size", 100)
    total = 20_000
    start_worker(idle_queue, "cancel", concurrency=1)
    records = [{"external_id": f"c{i}", "full_name": f"Customer {i}"} for i in range(total)]
    with publishing_to(idle_queue):
        job = _submit(client, batch_url(business["id"]), "customers", records).json()

    def started() -> dict[str, Any] | None:
        current: dict[str, Any] = client.get(f"/jobs/{job['id']}").json()
        return current if current["counts"]["processed"] >= 100 else None

    wait_for(started, timeout=60, interval=0.02, what="the first chunk")
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("running", "cancelled")

    finished = wait_job(client, job["id"])
    counts = finished["counts"]
    assert finished["status"] == "cancelled"
    assert counts["processed"] == counts["total"] == total
    assert counts["created"] + counts["cancelled"] == total
    assert counts["created"] >= 100
    assert counts["cancelled"] > 0
    assert counts["created"] % 100 == 0  # whole chunks: a chunk being processed when the cancel came finished

    results = all_results(client, job["id"])
    assert [r["index"] for r in results] == list(range(total))
    created = [r for r in results if r["outcome"] == "created"]
    assert len(created) == counts["created"]
    assert all(r["id"] is not None and r["external_id"] == f"c{r['index']}" for r in created)
    assert all(r["outcome"] in ("created", "cancelled") and not r["errors"] for r in results)

    # Messages still queued for the cancelled chunks are consumed without applying anything.
    wait_for(lambda: queue_length(idle_queue) == 0, timeout=30, what="the queue to drain")
    time.sleep(0.5)
    assert client.get(f"/jobs/{job['id']}").json()["counts"] == counts
    assert customer_count(business["id"]) == counts["created"]
    listed = client.get(f"/businesses/{business['id']}/customers", params={"external_id": created[-1]["external_id"]})
    assert listed.json()["data"][0]["id"] == created[-1]["id"]
    cancelled_index = next(r["index"] for r in results if r["outcome"] == "cancelled")
    listed = client.get(f"/businesses/{business['id']}/customers", params={"external_id": f"c{cancelled_index}"})
    assert listed.json()["data"] == []


def test_prefer_wait_answers_pocketflows_shape_once_finished(client, worker, business) -> None:  # noqa: ARG001
    url = batch_url(business["id"])
    existing = client.post(f"/sync/businesses/{business['id']}/customers", json={"external_id": "old"}).json()
    records: list[Any] = [
        {"external_id": "new", "email_address": "new@example.com", "full_name": "New"},
        {"external_id": "bad", "email_address": "nope", "phone_number": "x"},
        42,
        {"external_id": "old", "full_name": "Old, renamed"},
        {"full_name": "Anonymous"},
    ]
    response = client.post(url, json={"customers": records}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=10"
    body = response.json()
    assert set(body) == {"customers", "errors", "job"}
    assert body["job"]["status"] == "completed"
    assert body["job"]["counts"]["processed"] == 5
    customers = body["customers"]
    assert len(customers) == 5
    assert [c is None for c in customers] == [False, True, True, False, True]
    assert customers[0] == client.get(f"/customers/{customers[0]['id']}").json()
    assert customers[0]["email_address"] == "new@example.com"
    assert customers[3]["id"] == existing["id"]
    assert customers[3]["full_name"] == "Old, renamed"
    errors = sorted(body["errors"], key=lambda e: (e["index"], e["path"] or ""))
    assert [(e["index"], e["external_id"], e["code"], e["path"]) for e in errors] == [
        (1, "bad", "invalid_email", "email_address"),
        (1, "bad", "invalid_phone", "phone_number"),
        (2, None, "invalid_record", None),
        (4, None, "missing_identifier", None),
    ]
    assert all(set(e) == {"index", "external_id", "code", "message", "path"} and e["message"] for e in errors)

    businesses = client.post(
        "/sync/businesses/batch",
        json={"businesses": [{"external_id": "b-1", "name": "One"}, {"external_id": "b-2"}]},
        headers={"Prefer": "respond-async, wait=10"},
    )
    assert businesses.status_code == 200
    assert businesses.json()["businesses"][0]["name"] == "One"
    assert businesses.json()["businesses"][1] is None
    assert [(e["index"], e["code"]) for e in businesses.json()["errors"]] == [(1, "required")]


def test_prefer_wait_gives_the_plain_202_when_the_job_cannot_finish_in_time(client, business, idle_queue) -> None:
    with publishing_to(idle_queue):
        started = time.monotonic()
        response = client.post(
            batch_url(business["id"]), json={"customers": [{"external_id": "c1"}]}, headers={"Prefer": "wait=1"}
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert response.json()["status"] == "queued"
    assert response.headers["Location"] == f"/jobs/{response.json()['id']}"
    assert 1 <= elapsed < 5
    client.post(f"/jobs/{response.json()['id']}/cancel")


def test_status_of_a_running_100k_job_answers_quickly(client, worker, business) -> None:  # noqa: ARG001
    total = 100_000
    body = b"\n".join(b'{"external_id":"c%d","full_name":"C %d"}' % (i, i) for i in range(total))
    response = client.post(batch_url(business["id"]), content=body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    timings: list[tuple[float, str, int]] = []
    while True:
        started = time.perf_counter()
        current = client.get(f"/jobs/{job_id}")
        elapsed = time.perf_counter() - started
        assert current.status_code == 200
        job = current.json()
        timings.append((elapsed, job["status"], job["counts"]["processed"]))
        if job["status"] in FINISHED:
            break
        time.sleep(0.1)
        assert len(timings) < 1500, "the job did not finish in time"
    running = [t for t in timings if t[1] == "running" and 0 < t[2] < total]
    assert len(running) >= 3, timings
    assert max(t[0] for t in running) < 0.2, running
    assert job["status"] == "completed"
    assert job["counts"]["created"] == total

    streamed = _ndjson(client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"}))
    assert len(streamed) == total
    assert [r["index"] for r in streamed] == list(range(total))
    assert all(r["outcome"] == "created" for r in streamed)
