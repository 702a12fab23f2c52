"""API keys through the real processes: several live keys per partner (rotation), listed without secrets, used
keys stamped `last_used_at`, and a revoked key refused at once for writes and within 1 s for everything, on every
API process and kept-alive connection (SPEC §8)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from core.jobs.status import FINISHED
from tests.conftest import DATABASE_URL, PartnerKey, make_partner
from tests.e2e.conftest import PFSYNC, api_process, wait_for


def pfsync(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": DATABASE_URL}
    return subprocess.run([*PFSYNC, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def two_apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two separate API processes on the same database and Redis."""
    log_dir = tmp_path_factory.mktemp("keys")
    started = [api_process(log_dir, f"keys-api-{n}", "--workers", "1") for n in range(2)]
    yield [url for _, url in started]
    for process, _ in started:
        process.stop()


def test_keys_are_created_listed_without_secrets_and_partners_listed(two_apis: list[str]) -> None:
    first = make_partner("rotating")
    created = pfsync("key", "create", first.partner_id, "--json")
    assert created.returncode == 0, created.stderr
    second = orjson.loads(created.stdout)
    assert set(second) == {"partner_id", "key_id", "secret"}
    assert second["partner_id"] == first.partner_id
    assert second["key_id"] != first.key_id
    for url in two_apis:  # both keys live at once: rotation without downtime
        for auth in ((first.key_id, first.secret), (second["key_id"], second["secret"])):
            assert httpx.get(url + "/businesses", auth=auth).status_code == 200

    listed = pfsync("key", "list", first.partner_id, "--json")
    assert listed.returncode == 0, listed.stderr
    keys = orjson.loads(listed.stdout)
    assert [k["id"] for k in keys] == sorted([first.key_id, second["key_id"]])
    assert all(set(k) == {"id", "created_at", "last_used_at", "revoked_at"} for k in keys)
    assert all(k["last_used_at"] is not None and k["revoked_at"] is None for k in keys)
    assert first.secret not in listed.stdout
    assert second["secret"] not in listed.stdout

    partners = orjson.loads(pfsync("partner", "list", "--json").stdout)
    assert {"id": first.partner_id, "name": "rotating"}.items() <= next(
        p for p in partners if p["id"] == first.partner_id
    ).items()
    assert pfsync("key", "list", "ptn_nobody").returncode != 0
    assert pfsync("key", "create", "ptn_nobody").returncode != 0
    assert pfsync("key", "revoke", "key_nobody").returncode != 0


def _business_count(partner_id: str) -> int:
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute("SELECT count(*) FROM businesses WHERE partner_id = %s", (partner_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_revoked_key_writes_nothing_once_revoked_and_is_refused_everywhere_within_a_second(
    two_apis: list[str],
) -> None:
    partner = make_partner("revoked")
    spare = orjson.loads(pfsync("key", "create", partner.partner_id, "--json").stdout)
    clients = [httpx.Client(base_url=url, auth=(partner.key_id, partner.secret), timeout=10) for url in two_apis]
    stop = threading.Event()
    answered: list[tuple[float, int]] = []

    def hammer(client: httpx.Client, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            response = client.post("/sync/businesses", json={"external_id": f"w{n}-{i}", "name": "W"})
            answered.append((time.monotonic(), response.status_code))

    writers = [threading.Thread(target=hammer, args=(client, n)) for n, client in enumerate(clients)]
    try:
        for client in clients:  # warm: kept-alive connections, keys in every process's cache
            assert client.get("/businesses").status_code == 200
        for writer in writers:
            writer.start()
        time.sleep(0.5)
        revoked = pfsync("key", "revoke", partner.key_id)
        confirmed = time.monotonic()
        assert revoked.returncode == 0, revoked.stderr
        count_at_revocation = _business_count(partner.partner_id)
        time.sleep(0.3)
        stop.set()
        for writer in writers:
            writer.join(10)
        # Every write sent after the revocation returned was refused, and none was applied.
        after = [status for at, status in answered if at > confirmed + 0.05]
        assert after, "the writers kept going past the revocation"
        assert set(after) == {401}, after
        assert _business_count(partner.partner_id) == count_at_revocation
        assert any(status == 200 for _, status in answered)  # the key worked until then
        # Reads on the same kept-alive connections: 401 within a second, on both processes.
        deadline = confirmed + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        for client in clients:
            refused = client.get("/businesses")
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
        # The partner's other key is unaffected.
        for url in two_apis:
            assert httpx.get(url + "/businesses", auth=(spare["key_id"], spare["secret"])).status_code == 200
    finally:
        stop.set()
        for client in clients:
            client.close()
    keys: list[dict[str, Any]] = orjson.loads(pfsync("key", "list", partner.partner_id, "--json").stdout)
    assert [k["revoked_at"] is not None for k in keys] == [k["id"] == partner.key_id for k in keys]


@pytest.mark.usefixtures("worker")
def test_a_revoked_key_stops_the_batches_it_submitted(two_apis: list[str]) -> None:
    """A batch accepted before its key was revoked applies nothing once the revocation has returned: the job ends
    `cancelled`, every record either applied before the revocation or `cancelled`. (Large enough that the job is
    still running when `pfsync key revoke`, a process of its own, has started.)"""
    count = 100_000
    partner = make_partner("revoked-batch")
    spare = orjson.loads(pfsync("key", "create", partner.partner_id, "--json").stdout)
    with httpx.Client(base_url=two_apis[0], auth=(partner.key_id, partner.secret), timeout=30) as client:
        business = client.post("/sync/businesses", json={"external_id": "b", "name": "B"}).json()["id"]
        lines = (orjson.dumps({"external_id": f"c{i}", "full_name": f"C {i}"}) for i in range(count))
        accepted = client.post(
            f"/sync/businesses/{business}/customers/batch",
            content=b"\n".join(lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert accepted.status_code == 202, accepted.text
    revoked = pfsync("key", "revoke", partner.key_id)
    assert revoked.returncode == 0, revoked.stderr
    with httpx.Client(base_url=two_apis[1], auth=(spare["key_id"], spare["secret"]), timeout=30) as client:

        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/jobs/{accepted.json()['id']}").json()
            return job if job["status"] in FINISHED else None

        job = wait_for(ended, timeout=60, what="the job to end")
    assert job["status"] == "cancelled", job
    assert job["counts"]["cancelled"] > 0
    assert job["counts"]["created"] + job["counts"]["cancelled"] == count
    with psycopg.connect(DATABASE_URL) as conn:
        found = conn.execute("SELECT revoked_at FROM api_keys WHERE id = %s", (partner.key_id,)).fetchone()
        assert found is not None
        revoked_at = found[0]
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE created_at > %s) FROM customers WHERE business_id = %s",
            (revoked_at, business),
        ).fetchone()
    assert row == (job["counts"]["created"], 0)


def _key_row(key_id: str) -> tuple[Any, str]:
    """The key's `last_used_at` and its row version (xmin changes with every write of the row)."""
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute("SELECT last_used_at, xmin::text FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_last_used_at_is_kept_to_the_minute_without_a_write_per_request(two_apis: list[str]) -> None:
    partner: PartnerKey = make_partner("used")
    assert _key_row(partner.key_id)[0] is None
    with httpx.Client(base_url=two_apis[0], auth=partner.auth) as client:
        assert client.get("/businesses").status_code == 200
        used_at, version = _key_row(partner.key_id)
        assert used_at is not None
        # Past the one-second cache several times: the key is checked again, its row is not written again.
        for _ in range(25):
            assert client.get("/businesses").status_code == 200
            time.sleep(0.1)
    assert _key_row(partner.key_id) == (used_at, version)
