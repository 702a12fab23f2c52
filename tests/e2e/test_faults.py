"""Faults against real processes: `pfsync api`, `pfsync worker` and `pfsync scheduler` on a scratch PostgreSQL.

The whole stack of this module runs on a PostgreSQL and a Redis of its own (`cli.embedded.ScratchPostgres` and
`ScratchRedis`, restarted and flushed by the tests), so no fault reaches the servers the rest of the suite uses.
Leases and sweeps are short (PFSYNC_LEASE_SECONDS=3, PFSYNC_SWEEP_INTERVAL_SECONDS=0.5) to keep it fast.

Every test checks the same three things a partner relies on: the job finishes, no record was created twice
(rows counted by external_id), and every submitted record has exactly one outcome.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session

from cli.embedded import ScratchPostgres, ScratchRedis
from core.config import normalise_database_url
from core.partners.service import create_partner
from tests.conftest import PartnerKey
from tests.e2e.conftest import PFSYNC, Process, free_port, wait_answering, wait_for

FINISHED = ("completed", "cancelled", "failed")
CHUNK = 250
LEASE_SECONDS = 3


@dataclass
class Stack:
    """The service's processes on scratch servers, and what a test needs to drive and inspect them."""

    pg: ScratchPostgres
    broker: ScratchRedis
    database_url: str
    env: dict[str, str]
    log_dir: Path
    engine: Engine
    api_url: str = ""
    processes: list[Process] = field(default_factory=list)

    def process(self, name: str, *args: str, **env: str) -> Process:
        process = Process(f"{name}-{uuid.uuid4().hex[:4]}", [*PFSYNC, *args], self.log_dir, **{**self.env, **env})
        self.processes.append(process.start())
        return process

    def worker(self, concurrency: int = 2, **env: str) -> Process:
        return self.process("worker", "worker", "--concurrency", str(concurrency), **env)

    def api(self, **env: str) -> str:
        """Start an API process; its base URL once it answers."""
        port = free_port()
        process = self.process("api", "api", "--host", "127.0.0.1", "--port", str(port), **env)
        url = f"http://127.0.0.1:{port}"
        wait_answering(process, url)
        return url

    def partner(self) -> PartnerKey:
        with Session(self.engine) as session, session.begin():
            key = create_partner(session, name="fault drill")
        return PartnerKey(key.partner_id, key.key_id, key.secret)

    def client(self, partner: PartnerKey, url: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=url or self.api_url, auth=partner.auth, timeout=30)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pg = ScratchPostgres()
    log_dir = tmp_path_factory.mktemp("faults")
    broker = ScratchRedis(log_dir / "redis.log")
    engine: Engine | None = None
    built: Stack | None = None
    try:
        admin = pg.start()
        with create_engine(normalise_database_url(admin), isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("CREATE DATABASE pfsync"))
        database_url = admin.rsplit("/", 1)[0] + "/pfsync"
        engine = create_engine(
            normalise_database_url(database_url), connect_args={"application_name": "pfsync-test"}, pool_pre_ping=True
        )
        broker.start()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": broker.url,
            "PFSYNC_QUEUE_NAME": f"pfsync-faults-{uuid.uuid4().hex[:6]}",
            "PFSYNC_DATA_DIR": str(log_dir / "data"),
            "PFSYNC_CHUNK_SIZE": str(CHUNK),
            "PFSYNC_LEASE_SECONDS": str(LEASE_SECONDS),
            "PFSYNC_SWEEP_INTERVAL_SECONDS": "0.5",
            "PFSYNC_MAX_CHUNK_ATTEMPTS": "5",
            "PFSYNC_MAX_ACTIVE_JOBS_PER_PARTNER": "6",
            "PFSYNC_LOG_LEVEL": "INFO",
        }
        built = Stack(pg, broker, database_url, env, log_dir, engine)
        migrate = subprocess.run([*PFSYNC, "migrate"], env={**os.environ, **env}, capture_output=True, timeout=120)
        assert migrate.returncode == 0, migrate.stderr.decode()
        built.api_url = built.api()
        built.process("scheduler", "scheduler")
        yield built
    finally:
        if built is not None:
            for process in built.processes:
                process.stop(signal.SIGKILL)
        if engine is not None:
            engine.dispose()
        pg.destroy()
        broker.kill()


@pytest.fixture
def workers() -> Iterator[list[Process]]:
    """The workers a test starts; every one is killed when the test ends, so none outlives its test."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


def customers(count: int, prefix: str = "c", **fields: Any) -> list[dict[str, Any]]:
    return [{"external_id": f"{prefix}-{i:05d}", "full_name": f"Customer {i}", **fields} for i in range(count)]


def submit(client: httpx.Client, business_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/sync/businesses/{business_id}/customers/batch", json={"customers": records})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def new_business(client: httpx.Client) -> str:
    response = client.post("/sync/businesses", json={"external_id": f"biz-{uuid.uuid4().hex[:6]}", "name": "Salon"})
    assert response.status_code == 200, response.text
    business_id: str = response.json()["id"]
    return business_id


def finished_job(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in FINISHED else None

    result: dict[str, Any] = wait_for(finished, timeout, 0.2, f"job {job_id} to finish")
    return result


def results(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def assert_exactly_once(stack: Stack, client: httpx.Client, job: dict[str, Any], business_id: str) -> list[Any]:
    """Every record of the job has exactly one outcome, and no external_id is held by two rows."""
    found = results(client, job["id"])
    assert sorted(r["index"] for r in found) == list(range(job["counts"]["total"]))
    assert job["counts"]["processed"] == job["counts"]["total"] == len(found)
    duplicated = stack.scalar(
        "SELECT count(*) FROM (SELECT external_id FROM customers WHERE business_id = :b "
        "GROUP BY external_id HAVING count(*) > 1) d",
        b=business_id,
    )
    assert duplicated == 0
    return found


def scheduler_log(stack: Stack) -> str:
    return "".join(p.log() for p in stack.processes if p.name.startswith("scheduler"))


def chunk_attempts(stack: Stack, job_id: str, chunk_no: int) -> int:
    return int(
        stack.scalar("SELECT attempts FROM job_chunks WHERE job_id = :j AND chunk_no = :c", j=job_id, c=chunk_no)
    )


def waiting_insert(stack: Stack) -> bool:
    """Whether a worker's backend waits on a row lock inside its chunk's INSERT of customers."""
    return bool(
        stack.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pfsync' AND wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO customers%'"
        )
    )


def chunk_free(stack: Stack, job_id: str, chunk_no: int) -> bool:
    """Whether no backend (of a live or a killed worker) still holds the chunk's lock."""
    with stack.engine.connect() as conn:
        free = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:j || ':' || :c, 13))"),
            {"j": job_id, "c": str(chunk_no)},
        ).scalar()
        conn.rollback()
    return bool(free)


@contextlib.contextmanager
def uncommitted_customer(stack: Stack, partner: PartnerKey, business_id: str, external_id: str) -> Iterator[None]:
    """Insert a customer and hold the transaction open: a chunk creating the same external_id has written the rows
    that sort before it, then waits on this one, inside its transaction. Rolled back at the end."""
    conn: Connection = stack.engine.connect()
    try:
        conn.execute(
            text("INSERT INTO customers (id, business_id, partner_id, external_id) VALUES (:i, :b, :p, :x)"),
            {"i": f"cus_hold{uuid.uuid4().hex}", "b": business_id, "p": partner.partner_id, "x": external_id},
        )
        yield
    finally:
        conn.rollback()
        conn.close()


def kill_main_process(process: Process) -> None:
    """SIGKILL the worker's main process alone, as `kill -9` of the pid an orchestrator knows does."""
    assert process.proc is not None
    os.kill(process.proc.pid, signal.SIGKILL)
    process.proc.wait(10)


def kill(process: Process) -> None:
    """SIGKILL the worker's whole process group (the Celery parent and its pool processes)."""
    process.stop(signal.SIGKILL)


def test_worker_killed_mid_chunk_twice_in_a_row_loses_and_duplicates_nothing(stack: Stack, workers: list[Process]):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    job = submit(client, business_id, customers(3000))  # no worker yet: its messages wait in Redis
    job_id = job["id"]
    # Chunk 0 holds c-00000..c-00249; it writes them in external_id order, so it has written 249 rows when it
    # reaches the held c-00249 and waits: the kill lands in the middle of its transaction.
    held = f"c-{CHUNK - 1:05d}"
    for attempt in (1, 2):
        with uncommitted_customer(stack, partner, business_id, held):
            workers.append(stack.worker())
            wait_for(lambda: waiting_insert(stack), 30, 0.05, "a worker blocked mid-chunk")
            assert chunk_attempts(stack, job_id, 0) == attempt
            if attempt == 1:
                kill_main_process(workers[-1])  # `kill -9 <pid>`: its pool processes die with it
            else:
                kill(workers[-1])
        wait_for(lambda: chunk_free(stack, job_id, 0), 10, 0.05, "the killed worker's transaction to end")
        assert stack.scalar("SELECT state FROM job_chunks WHERE job_id = :j AND chunk_no = 0", j=job_id) == "queued"

    workers.append(stack.worker())
    done = finished_job(client, job["id"], 60)
    assert done["status"] == "completed"
    assert done["counts"]["created"] == 3000
    assert done["counts"]["failed"] == 0
    found = assert_exactly_once(stack, client, done, business_id)
    assert {r["outcome"] for r in found} == {"created"}
    assert stack.scalar("SELECT count(*) FROM customers WHERE business_id = :b", b=business_id) == 3000
    assert chunk_attempts(stack, job["id"], 0) == 3


def test_a_chunk_that_keeps_killing_its_worker_fails_alone_and_nothing_loops(stack: Stack, workers: list[Process]):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    records = customers(1000)
    poison = records[600]["external_id"]  # in chunk 2
    job = submit(client, business_id, records)
    worker = stack.worker(PFSYNC_TEST_CRASH_ON_EXTERNAL_ID=poison, PFSYNC_MAX_CHUNK_ATTEMPTS="3")
    workers.append(worker)

    done = finished_job(client, job["id"], 60)
    assert done["status"] == "failed"
    assert done["counts"] == {
        "total": 1000, "processed": 1000, "created": 750, "replaced": 0, "unchanged": 0, "superseded": 0,
        "failed": 250, "cancelled": 0,
    }  # fmt: skip
    found = assert_exactly_once(stack, client, done, business_id)
    for result in found:
        if 500 <= result["index"] < 750:
            assert result["outcome"] == "failed"
            assert [e["code"] for e in result["errors"]] == ["internal_error"]
            assert result["external_id"] is None or result["external_id"].startswith("c-")
        else:
            assert result["outcome"] == "created"
    # The poison chunk's records were never applied; the others were, once.
    assert stack.scalar("SELECT count(*) FROM customers WHERE business_id = :b", b=business_id) == 750
    # Three attempts killed the worker; the fourth gave up. No message keeps it going: the count stays put.
    assert chunk_attempts(stack, job["id"], 2) == 4
    time.sleep(LEASE_SECONDS + 1.5)
    assert chunk_attempts(stack, job["id"], 2) == 4
    assert worker.proc is not None
    assert worker.proc.poll() is None, "the worker itself survives its pool processes"


def test_broker_flushed_mid_job_the_sweeper_republishes_and_the_job_finishes(stack: Stack, workers: list[Process]):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    broker = redis.Redis.from_url(stack.broker.url)
    # One pool process: of the job's two released chunks one is being applied and the other waits in Redis.
    workers.append(stack.worker(concurrency=1))
    job = submit(client, business_id, customers(2500))
    wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["counts"]["processed"] > 0, 30, 0.02, "the job to run")
    sweeps_before = scheduler_log(stack).count("republishing")
    broker.flushall()  # the queue, the unacked messages and the bindings: everything Redis held
    flushed_at = time.monotonic()
    broker.close()

    done = finished_job(client, job["id"], 60)
    assert done["status"] == "completed"
    assert done["counts"]["created"] == 2500
    assert_exactly_once(stack, client, done, business_id)
    # The sweeper published the lost chunk again, after its lease and not much more.
    assert scheduler_log(stack).count("republishing") > sweeps_before
    assert time.monotonic() - flushed_at < LEASE_SECONDS + 20


def test_broker_restarted_empty_again_and_again_workers_reconnect_and_the_job_finishes(
    stack: Stack, workers: list[Process]
):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    started = [stack.worker(), stack.worker()]
    workers.extend(started)
    job = submit(client, business_id, customers(30000))
    wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["counts"]["processed"] > 0, 30, 0.02, "the job to run")
    # Redis dies (SIGKILL) and comes back empty, over and over, while both workers are busy with chunks.
    for _ in range(8):
        time.sleep(0.7)
        stack.broker.kill()
        time.sleep(0.3)
        stack.broker.start()
    done = finished_job(client, job["id"], 90)
    assert done["status"] == "completed"
    assert done["counts"]["created"] == 30000
    assert_exactly_once(stack, client, done, business_id)
    for worker in started:
        assert "Unrecoverable error" not in worker.log(), worker.log()[-4000:]
        assert worker.proc is not None
        assert worker.proc.poll() is None, "a worker reconnects instead of dying"


def test_broker_down_when_a_batch_is_submitted_the_job_still_finishes(stack: Stack, workers: list[Process]):
    partner = stack.partner()
    workers.append(stack.worker())
    # An API process whose broker is unreachable: it stores the job, answers 202, and cannot publish.
    cut_off = stack.api(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with stack.client(partner, cut_off) as client:
        business_id = new_business(client)
        started = time.monotonic()
        job = submit(client, business_id, customers(600))
        assert time.monotonic() - started < 10, "publishing must not hold the answer for long"
        assert client.get(f"/jobs/{job['id']}").status_code == 200

    with stack.client(partner) as client:
        done = finished_job(client, job["id"], LEASE_SECONDS + 30)
        assert done["status"] == "completed"
        assert done["counts"]["created"] == 600
        assert_exactly_once(stack, client, done, business_id)


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["status"], problem["code"]) == (503, "service_unavailable")
    assert response.headers.get("retry-after")


def test_postgres_restarted_mid_job_the_job_finishes_and_the_api_answers_503_meanwhile(
    stack: Stack, workers: list[Process]
):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    unknown = PartnerKey("ptn_x", "key_00000000000000000000000000", "sk_wrong")
    workers.append(stack.worker())
    job = submit(client, business_id, customers(3000))
    wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["counts"]["processed"] > 0, 30, 0.02, "the job to run")

    # Clients keep calling throughout, so some requests are in flight when the server goes away and comes back.
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    busy_business = new_business(client)

    def call(own: httpx.Client, n: int, i: int) -> httpx.Response:
        kind = i % 4
        if kind == 0:
            return own.get(f"/jobs/{job['id']}")
        if kind == 1:
            return own.post("/sync/businesses", json={"external_id": f"h{n}-{i}", "name": "Busy"})
        if kind == 2:
            records = customers(200, prefix=f"h{n}-{i}")
            url = f"/sync/businesses/{busy_business}/customers/batch"
            return own.post(url, json={"customers": records}, headers={"Idempotency-Key": f"h{n}-{i}"})
        return own.get(f"/businesses/{busy_business}/customers", params={"limit": 500})

    def keep_calling(n: int) -> None:
        with stack.client(partner) as own:
            for i in itertools.count():
                if stop.is_set():
                    return
                statuses[call(own, n, i).status_code] += 1

    callers = [threading.Thread(target=keep_calling, args=(n,)) for n in range(3)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(0.5)
        stack.pg.stop("fast")
        requests: list[Callable[[], httpx.Response]] = [
            lambda: client.get(f"/jobs/{job['id']}"),
            lambda: client.get(f"/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"}),
            lambda: client.get("/businesses"),
            lambda: client.post("/sync/businesses", json={"external_id": "during", "name": "Down"}),
            lambda: client.post(
                "/sync/businesses", json={"external_id": "during", "name": "Down"}, headers={"Idempotency-Key": "k1"}
            ),
            lambda: client.post(f"/sync/businesses/{business_id}/customers/batch", json={"customers": [{"id": "x"}]}),
            lambda: client.post("/businesses", json={"name": "Legacy"}),
            lambda: client.post(f"/jobs/{job['id']}/cancel"),
            lambda: httpx.get(stack.api_url + "/businesses", auth=unknown.auth),
        ]
        for request in requests:
            _assert_unavailable(request())
        assert httpx.get(stack.api_url + "/healthz").status_code == 200
        assert httpx.get(stack.api_url + "/readyz").status_code == 503
        time.sleep(1)
        stack.pg.start()
        time.sleep(1)
        stack.pg.stop("immediate")  # a crash this time: recovery on the next start
        time.sleep(1)
    finally:
        if not stack.pg.running():
            stack.pg.start()
        time.sleep(0.5)
        stop.set()
        for caller in callers:
            caller.join(30)
    assert statuses[503] > 0
    assert {code for code in statuses if code >= 500} == {503}, statuses

    done = finished_job(client, job["id"], 60)
    assert done["status"] == "completed"
    assert done["counts"]["created"] == 3000
    assert_exactly_once(stack, client, done, business_id)
    assert stack.scalar("SELECT count(*) FROM customers WHERE business_id = :b", b=business_id) == 3000
    assert client.get("/businesses").status_code == 200
    assert httpx.get(stack.api_url + "/readyz").status_code == 200


def test_six_jobs_upserting_the_same_keys_in_different_orders_end_with_the_last_submitted(
    stack: Stack, workers: list[Process]
):
    partner = stack.partner()
    client = stack.client(partner)
    business_id = new_business(client)
    keys = [f"k-{i:05d}" for i in range(2000)]
    jobs = []
    for n in range(6):
        order = list(keys)
        if n % 3 == 1:
            order.reverse()
        elif n % 3 == 2:
            random.Random(n).shuffle(order)
        records = [
            {"external_id": k, "full_name": f"job {n}", "phone_number": f"+1 555 {n:04d}", "metadata": {"job": n}}
            for k in order
        ]
        jobs.append(submit(client, business_id, records))
    # All six are admitted (PFSYNC_MAX_ACTIVE_JOBS_PER_PARTNER=6), their chunks racing over the same rows.
    workers.append(stack.worker(concurrency=4))
    done = [finished_job(client, job["id"], 120) for job in jobs]
    for job in done:
        assert job["status"] == "completed"
        assert job["counts"]["failed"] == 0, job
        assert_exactly_once(stack, client, job, business_id)
    assert done[-1]["counts"]["superseded"] == 0
    with stack.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT external_id, full_name, phone_number, metadata FROM customers WHERE business_id = :b"),
            {"b": business_id},
        ).all()
    assert len(rows) == 2000
    assert {(r.full_name, r.phone_number, r.metadata["job"]) for r in rows} == {("job 5", "+1 555 0005", 5)}


def test_jobs_over_the_partner_cap_wait_queued_until_earlier_ones_finish(stack: Stack, workers: list[Process]):
    partner, other = stack.partner(), stack.partner()
    client, other_client = stack.client(partner), stack.client(other)
    business_id, other_business = new_business(client), new_business(other_client)
    # No worker yet: the first six jobs (PFSYNC_MAX_ACTIVE_JOBS_PER_PARTNER=6) are admitted, the seventh waits.
    jobs = [submit(client, business_id, customers(20, prefix=f"j{n}")) for n in range(7)]
    other_job = submit(other_client, other_business, customers(20))

    def admitted(job_id: str) -> bool:
        return bool(stack.scalar("SELECT admitted FROM sync_jobs WHERE id = :j", j=job_id))

    assert [admitted(job["id"]) for job in jobs] == [True] * 6 + [False]
    assert (
        stack.scalar("SELECT count(*) FROM job_chunks WHERE job_id = :j AND state <> 'pending'", j=jobs[6]["id"]) == 0
    )
    assert admitted(other_job["id"]), "another partner is not held back by this one's jobs"
    assert client.get(f"/jobs/{jobs[6]['id']}").json()["status"] == "queued"

    workers.append(stack.worker())
    done = [finished_job(client, job["id"], 60) for job in jobs]
    assert all(job["status"] == "completed" for job in done)
    assert finished_job(other_client, other_job["id"], 30)["status"] == "completed"
    first_finish = min(job["finished_at"] for job in done[:6])
    assert done[6]["started_at"] >= first_finish
