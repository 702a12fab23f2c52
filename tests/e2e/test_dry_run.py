"""Dry runs through a real worker (SPEC §9): a dry run of a batch, then the real run of the same batch, compared
record by record over every outcome and every error a client can cause; nothing a dry run reads is written or
locked, and no write sequence is taken; dry-run jobs are labelled wherever jobs are shown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.config import settings as service_settings
from core.db import session_scope
from tests.conftest import DATABASE_URL, PartnerKey
from tests.e2e.conftest import (
    Process,
    all_results,
    batch_url,
    publishing_to,
    queue_length,
    wait_for,
    wait_job,
)
from workers.publish import publish_chunks

pytestmark = pytest.mark.usefixtures("worker")
UNKNOWN_ID = "cus_00000000000000000000000000"


def post_batch(client: Any, url: str, body: bytes, *, dry_run: bool, ndjson: bool = True) -> dict[str, Any]:
    """Submit a batch (a dry run or not) and wait for its job to finish."""
    response = client.post(
        url,
        params={"dry_run": "true"} if dry_run else None,
        content=body,
        headers={"Content-Type": "application/x-ndjson" if ndjson else "application/json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["dry_run"] is dry_run
    return wait_job(client, response.json()["id"])


def snapshot(partner_id: str) -> list[tuple[Any, ...]]:
    """Every business and customer of the partner as stored, with the row version and lock marks PostgreSQL keeps
    for it: any write to a row, and any lock taken on it, changes its `xmin`, `xmax` or `ctid`."""
    with session_scope() as session:
        return list(
            session.execute(
                text(
                    "SELECT 'business', id, external_id, name, NULL, NULL, NULL, metadata::text, updated_at, "
                    "  last_seq, xmin::text, xmax::text, ctid::text FROM businesses WHERE partner_id = :p "
                    "UNION ALL SELECT 'customer', id, external_id, email_address, phone_number, full_name, "
                    "  unsubscribed, metadata::text, updated_at, last_seq, xmin::text, xmax::text, ctid::text "
                    "  FROM customers WHERE partner_id = :p ORDER BY 2"
                ),
                {"p": partner_id},
            ).all()
        )


def write_seq() -> int:
    with session_scope() as session:
        return int(session.execute(text("SELECT last_value FROM write_seq")).scalar_one())


def comparable(result: dict[str, Any]) -> tuple[Any, ...]:
    """What a dry run and the real run after it must agree on (a created record has an id only in the real one)."""
    created = result["outcome"] == "created"
    return (
        result["index"],
        result["outcome"],
        None if created else result["id"],
        result["external_id"],
        result["changed_fields"],
        result["errors"],
    )


def ndjson(records: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def test_a_dry_run_then_the_real_run_agree_on_every_outcome_and_error(
    client: Any, partner: PartnerKey, business: dict[str, Any]
) -> None:
    url = batch_url(business["id"])
    seeded = post_batch(
        client,
        url,
        ndjson(
            [
                {"external_id": "keep", "email_address": "keep@example.com", "full_name": "Keep", "metadata": {"a": 1}},
                {"external_id": "change", "email_address": "change@example.com", "full_name": "Old"},
                {"external_id": "mover", "email_address": "mover@example.com"},
                {"external_id": "holder", "email_address": "taken@example.com"},
                {"external_id": "other"},
                {"external_id": "old-email", "email_address": "free-later@example.com"},
            ]
        ),
        dry_run=False,
    )
    ids = {r["external_id"]: r["id"] for r in all_results(client, seeded["id"])}
    records: list[Any] = [
        {"external_id": "keep", "email_address": "keep@example.com", "full_name": "Keep", "metadata": {"a": 1}},
        {"external_id": "change", "email_address": "change@example.com", "full_name": "New", "metadata": {"b": 2}},
        {"id": ids["mover"], "external_id": "moved", "email_address": "mover@example.com"},  # a migration to new keys
        {"external_id": "mover", "full_name": "Takes the key record 2 gives up"},
        {"external_id": "new-1", "email_address": "fresh@example.com"},
        {"id": UNKNOWN_ID},
        {"id": ids["holder"], "external_id": "other"},
        {"external_id": "new-2", "email_address": "TAKEN@example.com"},
        {"full_name": "No identifier"},
        {"external_id": "dup", "email_address": "dup@example.com"},
        {"external_id": "dup"},
        {"external_id": "bad-email", "email_address": "nope"},
        {"external_id": "bad-phone", "phone_number": "x"},
        {"external_id": "typo", "fullname": "x"},
        {"external_id": "nul", "full_name": "a\u0000b"},
        {"external_id": "long", "full_name": "x" * 256},
        {"external_id": "deep", "metadata": nested(17)},
        b'{"external_id": "big-int", "metadata": {"n": 1180591620717411303424}}',
        {"external_id": "big-meta", "metadata": {"s": "x" * 17_000}},
        b"{not json",
        b"[1, 2]",
        {"external_id": "old-email", "email_address": "new-address@example.com"},
        {"external_id": "new-3", "email_address": "free-later@example.com"},  # freed by record 21
        {"external_id": ""},
        {"external_id": 5},
        b'{"external_id": "huge", "full_name": "' + b"x" * (1024 * 1024) + b'"}',
        {"external_id": "many", **{f"field_{i}": 1 for i in range(25)}},
    ]
    body = ndjson(records)
    before, seq_before = snapshot(partner.partner_id), write_seq()

    dry_job = post_batch(client, url, body, dry_run=True)

    assert snapshot(partner.partner_id) == before  # not a row written, not a row locked
    assert write_seq() == seq_before  # and no write sequence taken
    dry = all_results(client, dry_job["id"])
    expected = {
        0: ("unchanged", []),
        1: ("replaced", []),
        2: ("replaced", []),
        3: ("created", []),
        4: ("created", []),
        5: ("failed", ["not_found"]),
        6: ("failed", ["external_id_conflict"]),
        7: ("failed", ["email_address_taken"]),
        8: ("failed", ["missing_identifier"]),
        9: ("failed", ["duplicate_in_batch"]),
        10: ("failed", ["duplicate_in_batch"]),
        11: ("failed", ["invalid_email"]),
        12: ("failed", ["invalid_phone"]),
        13: ("failed", ["unknown_field"]),
        14: ("failed", ["nul_character"]),
        15: ("failed", ["too_long"]),
        16: ("failed", ["metadata_too_deep"]),
        17: ("failed", ["invalid_number"]),
        18: ("failed", ["metadata_too_large"]),
        19: ("failed", ["malformed_record"]),
        20: ("failed", ["invalid_record"]),
        21: ("replaced", []),
        22: ("created", []),
        23: ("failed", ["too_short"]),
        24: ("failed", ["invalid_type"]),
        25: ("failed", ["record_too_large"]),
        26: ("failed", ["unknown_field"] * 20 + ["too_many_errors"]),
    }
    assert {r["index"]: (r["outcome"], [e["code"] for e in r["errors"]]) for r in dry} == expected
    assert dry_job["dry_run"] is True
    assert dry_job["counts"] == {
        "total": 27,
        "processed": 27,
        "created": 3,
        "replaced": 3,
        "unchanged": 1,
        "superseded": 0,
        "failed": 20,
        "cancelled": 0,
    }
    assert [r["id"] for r in dry if r["outcome"] == "created"] == [None, None, None]
    assert dry[1]["changed_fields"] == ["full_name", "metadata"]
    assert dry[1]["changes"] == {"full_name": {"from": "Old", "to": "New"}, "metadata": {"from": {}, "to": {"b": 2}}}
    assert dry[2]["changes"] == {"external_id": {"from": "mover", "to": "moved"}}
    assert dry[21]["changes"] == {"email_address": {"from": "free-later@example.com", "to": "new-address@example.com"}}
    assert [r["index"] for r in dry if "changes" in r] == [1, 2, 21]
    assert all(r["changed_fields"] == [] for r in dry if r["outcome"] != "replaced")

    real_job = post_batch(client, url, body, dry_run=False)

    real = all_results(client, real_job["id"])
    assert [comparable(r) for r in real] == [comparable(r) for r in dry]
    assert real_job["counts"] == dry_job["counts"]
    assert all("changes" not in r for r in real)
    assert all(r["id"] for r in real if r["outcome"] == "created")
    # The real run stored exactly what the dry run said it would.
    changed = client.get(f"/customers/{ids['change']}").json()
    assert (changed["full_name"], changed["metadata"]) == ("New", {"b": 2})
    assert client.get(f"/customers/{ids['mover']}").json()["external_id"] == "moved"


def test_a_dry_run_of_businesses_previews_a_migration_to_external_ids(client: Any, partner: PartnerKey) -> None:
    legacy = client.post("/sync/businesses", json={"external_id": "legacy-1", "name": "Salon"}).json()
    body = orjson.dumps(
        {
            "businesses": [
                {"id": legacy["id"], "external_id": "crm-1", "name": "Salon"},  # send id and external_id once
                {"external_id": "crm-2"},  # no name
                {"external_id": "crm-3", "name": "New Salon"},
            ]
        }
    )
    before = snapshot(partner.partner_id)

    dry_job = post_batch(client, "/sync/businesses/batch", body, dry_run=True, ndjson=False)

    assert snapshot(partner.partner_id) == before
    dry = all_results(client, dry_job["id"])
    assert [(r["outcome"], r["id"], r["changed_fields"]) for r in dry] == [
        ("replaced", legacy["id"], ["external_id"]),
        ("failed", None, []),
        ("created", None, []),
    ]
    assert dry[0]["changes"] == {"external_id": {"from": "legacy-1", "to": "crm-1"}}
    assert [e["code"] for e in dry[1]["errors"]] == ["required"]

    real = all_results(client, post_batch(client, "/sync/businesses/batch", body, dry_run=False, ndjson=False)["id"])
    assert [comparable(r) for r in real] == [comparable(r) for r in dry]


def test_each_chunk_of_a_dry_run_sees_what_the_chunks_before_it_would_do(
    client: Any, business: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = batch_url(business["id"])
    seeded = post_batch(
        client,
        url,
        ndjson([{"external_id": "a", "email_address": "a@example.com"}, {"external_id": "b", "full_name": "B"}]),
        dry_run=False,
    )
    a, b = (r["id"] for r in all_results(client, seeded["id"]))
    monkeypatch.setattr(service_settings, "chunk_size", 2)  # the chunks are cut by this (in-process) API
    records = [
        {"id": a, "external_id": "a2", "email_address": "a2@example.com"},  # gives up "a" and a@example.com
        {"external_id": "b", "full_name": "B2"},
        {"external_id": "a", "email_address": "a@example.com"},  # both free by then: a new customer
        {"id": b, "full_name": "B2"},  # as record 1 left it
        {"external_id": "c"},
    ]

    job = post_batch(client, url, ndjson(records), dry_run=True)

    results = all_results(client, job["id"])
    assert [(r["outcome"], r["id"], r["changed_fields"]) for r in results] == [
        ("replaced", a, ["external_id", "email_address"]),
        ("replaced", b, ["full_name"]),
        ("created", None, []),
        ("unchanged", b, []),
        ("created", None, []),
    ]
    with session_scope() as session:
        assert (
            session.execute(text("SELECT count(*) FROM dry_run_rows WHERE job_id = :j"), {"j": job["id"]}).scalar() == 0
        )
        chunks = session.execute(text("SELECT count(*) FROM job_chunks WHERE job_id = :j"), {"j": job["id"]}).scalar()
    assert chunks == 3


def test_a_chunk_that_comes_before_its_predecessor_to_a_lone_worker_waits_its_turn(
    client: Any,
    business: dict[str, Any],
    idle_queue: str,
    start_worker: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker process, the second chunk's message first in the queue: it cannot wait for a predecessor that only
    it could process, so it gives its attempt back and the first chunk, once done, publishes it again."""
    url = batch_url(business["id"])
    seeded = post_batch(client, url, ndjson([{"external_id": "t-a", "email_address": "t@example.com"}]), dry_run=False)
    [stored] = all_results(client, seeded["id"])
    monkeypatch.setattr(service_settings, "chunk_size", 2)
    records = [
        {"external_id": "t-a", "email_address": "t2@example.com"},  # gives up t@example.com
        {"external_id": "t-b"},
        {"external_id": "t-c", "email_address": "t@example.com"},  # free by then: a new customer
    ]
    with publishing_to(idle_queue):
        response = client.post(url, params={"dry_run": "true"}, content=ndjson(records),
                               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert response.status_code == 202
        job_id = response.json()["id"]
        wait_for(lambda: queue_length(idle_queue) == 2, 10, 0.05, "both chunks published")
        drop_queue(idle_queue)
        publish_chunks([(job_id, 1), (job_id, 0)])  # out of order
    start_worker(idle_queue, "lone", concurrency=1)

    job = wait_job(client, job_id, timeout=20)  # well within the 30 s lease: nothing waits for the sweeper

    results = all_results(client, job_id)
    assert [(r["outcome"], r["id"]) for r in results] == [
        ("replaced", stored["id"]),
        ("created", None),
        ("created", None),
    ]
    assert job["counts"]["created"] == 2
    with session_scope() as session:
        attempts = session.execute(
            text("SELECT chunk_no, attempts FROM job_chunks WHERE job_id = :j ORDER BY chunk_no"), {"j": job_id}
        ).all()
    assert [tuple(a) for a in attempts] == [(0, 1), (1, 1)]  # the attempt given back is not counted


def drop_queue(queue: str) -> None:
    import redis

    from tests.conftest import REDIS_URL

    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.delete(queue)
    finally:
        connection.close()


@contextmanager
def row_locked(table: str, row_id: str) -> Iterator[None]:
    """Another transaction holding the row FOR UPDATE, as a real write does, until the block ends."""
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", (row_id,))
        yield
        conn.rollback()


def test_a_dry_run_does_not_wait_for_a_row_a_real_write_holds(client: Any, business: dict[str, Any]) -> None:
    url = batch_url(business["id"])
    seeded = post_batch(client, url, ndjson([{"external_id": "held", "full_name": "Held"}]), dry_run=False)
    [held] = all_results(client, seeded["id"])
    with row_locked("customers", held["id"]):
        response = client.post(url, params={"dry_run": "true"}, json={"customers": [{"external_id": "held"}]})
        job = wait_job(client, response.json()["id"], timeout=15)
        [result] = all_results(client, job["id"])
    assert (result["outcome"], result["changed_fields"]) == ("replaced", ["full_name"])


def test_dry_runs_are_labelled_and_can_be_listed_apart(client: Any, business: dict[str, Any]) -> None:
    url = batch_url(business["id"])
    real = post_batch(client, url, ndjson([{"external_id": "l-1"}]), dry_run=False)
    dry = post_batch(client, url, ndjson([{"external_id": "l-2"}]), dry_run=True)

    flags = {j["id"]: j["dry_run"] for j in client.get("/jobs").json()["data"]}
    assert (flags[dry["id"]], flags[real["id"]]) == (True, False)
    assert [j["id"] for j in client.get("/jobs", params={"dry_run": "true"}).json()["data"]] == [dry["id"]]
    only_real = [j["id"] for j in client.get("/jobs", params={"dry_run": "false"}).json()["data"]]
    assert dry["id"] not in only_real
    assert real["id"] in only_real
    assert client.get(f"/jobs/{dry['id']}").json()["dry_run"] is True
    refused = client.get("/jobs", params={"dry_run": "perhaps"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "invalid_parameter"


def test_prefer_wait_is_not_applied_to_a_dry_run(client: Any, business: dict[str, Any]) -> None:
    response = client.post(
        batch_url(business["id"]),
        params={"dry_run": "true"},
        json={"customers": [{"external_id": "w-1"}]},
        headers={"Prefer": "wait=5"},
    )
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert response.json()["dry_run"] is True


def test_metrics_count_dry_runs_apart(client: Any, business: dict[str, Any]) -> None:
    from tests.e2e.test_metrics import scrape, value

    before = scrape(client)
    post_batch(client, batch_url(business["id"]), ndjson([{"external_id": f"m-{i}"} for i in range(3)]), dry_run=True)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pfsync_records_total", outcome="created", dry_run="true") >= 3
    assert delta("pfsync_jobs", type="customers", status="completed", dry_run="true") >= 1
    assert delta("pfsync_records_total", outcome="created", dry_run="false") == 0


# --- random batches: the dry run and the real run after it, through the worker -----------------------------------

POOL_XIDS = ("p0", "p1", "p2", "p3")
POOL_EMAILS = ("p0@example.com", "p1@example.com", "p2@example.com", "P2@EXAMPLE.COM")

random_record = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(("#0", "#1", "#2", UNKNOWN_ID)),
            "external_id": st.one_of(st.none(), st.sampled_from((*POOL_XIDS, "q0", "q1"))),
            "email_address": st.one_of(st.none(), st.sampled_from((*POOL_EMAILS, "not an address"))),
            "full_name": st.sampled_from(("Ann", "Bob")),
            "metadata": st.sampled_from(({}, {"k": 1})),
            "colour": st.just("red"),
        },
    ),
    st.just(7),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(records=st.lists(random_record, min_size=1, max_size=12))
def test_random_batches_a_dry_run_and_the_real_run_after_it_agree(client: Any, records: list[Any]) -> None:
    created = client.post("/sync/businesses", json={"external_id": f"prop-{uuid.uuid4().hex[:8]}", "name": "P"}).json()
    url = batch_url(created["id"])
    seeded = post_batch(
        client,
        url,
        ndjson(
            [
                {"external_id": "p0", "email_address": "p0@example.com", "full_name": "Ann"},
                {"external_id": "p1", "email_address": "p2@example.com"},
                {"external_id": "p2", "full_name": "Bob", "metadata": {"k": 1}},
            ]
        ),
        dry_run=False,
    )
    ids = [r["id"] for r in all_results(client, seeded["id"])]
    named = [
        {**r, "id": ids[int(r["id"][1:])]} if isinstance(r, dict) and str(r.get("id", "")).startswith("#") else r
        for r in records
    ]
    body = ndjson(named)
    dry = all_results(client, post_batch(client, url, body, dry_run=True)["id"])
    real = all_results(client, post_batch(client, url, body, dry_run=False)["id"])
    assert [comparable(r) for r in dry] == [comparable(r) for r in real]
