"""End-to-end fixtures: a real Celery worker (and scheduler) as separate processes on the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DATABASE_URL, REDIS_URL, ROOT


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        PFSYNC_QUEUE_NAME=os.environ["PFSYNC_QUEUE_NAME"],
        PFSYNC_LOG_JSON="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_dir: Path, **env: str) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.env = process_env(**env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_process(log_dir: Path, name: str = "worker", concurrency: int = 2, **env: str) -> Process:
    """A Celery worker consuming `PFSYNC_QUEUE_NAME` (the session's queue unless `env` names another)."""
    queue = env.get("PFSYNC_QUEUE_NAME", os.environ["PFSYNC_QUEUE_NAME"])
    return Process(
        name,
        [
            sys.executable, "-m", "celery", "-A", "workers.app:celery_app", "worker",
            "-Q", queue, "-c", str(concurrency), "-E",
            "--without-mingle", "--without-gossip", "-n", f"{name}-{os.getpid()}@%h", "--loglevel", "INFO",
        ],
        log_dir,
        **env,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


PFSYNC_SCRIPT = Path(sys.executable).with_name("pfsync")
PFSYNC = [str(PFSYNC_SCRIPT)] if PFSYNC_SCRIPT.exists() else [sys.executable, "-m", "cli"]


def api_process(log_dir: Path, name: str = "api", *args: str, **env: str) -> tuple[Process, str]:
    """A `pfsync api` process on the test database, started and answering; its base URL."""
    port = free_port()
    process = Process(name, [*PFSYNC, "api", "--host", "127.0.0.1", "--port", str(port), *args], log_dir, **env)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(process, url)
    except BaseException:
        process.stop()
        raise
    return process, url


def wait_answering(process: Process, url: str, timeout: float = 30) -> None:
    """Wait until the API process at `url` answers /healthz; fail (with its log) if it exits first."""

    def up() -> bool:
        assert process.proc is not None
        assert process.proc.poll() is None, process.log()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        return False

    wait_for(up, timeout, 0.1, f"the API process {process.name}")


def scheduler_process(log_dir: Path, **env: str) -> Process:
    return Process("scheduler", [sys.executable, "-c", "from workers.scheduler import main; main()"], log_dir, **env)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="session")
def worker(log_dir: Path) -> Iterator[Process]:
    """One Celery worker (2 processes) for the whole e2e session."""
    process = worker_process(log_dir).start()
    yield process
    process.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_job(client: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll a job until it is finished; return it."""

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in ("completed", "cancelled", "failed") else None

    result: dict[str, Any] = wait_for(finished, timeout, 0.1, f"job {job_id}")
    return result


def queue_length(queue: str) -> int:
    """How many messages wait in a broker queue."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


@pytest.fixture
def idle_queue() -> Iterator[str]:
    """The name of a fresh queue that no worker consumes until the test starts one on it (`start_worker`);
    whatever is left in it is dropped at the end of the test."""
    import redis

    name = f"pfsync-test-idle-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(name, f"_kombu.binding.{name}")
    finally:
        client.close()


@contextmanager
def publishing_to(queue: str) -> Iterator[None]:
    """Make the in-process API publish the chunks of the batches it accepts to `queue`."""
    from core.config import settings
    from workers.app import celery_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "queue_name", queue)
        patch.setitem(celery_app.conf, "task_default_queue", queue)
        yield


@pytest.fixture
def start_worker(log_dir: Path) -> Iterator[Callable[..., Process]]:
    """Start a dedicated worker on a queue; every worker started is stopped when the test ends."""
    started: list[Process] = []

    def start(queue: str, name: str, concurrency: int = 2) -> Process:
        process = worker_process(log_dir, name=f"{name}-{uuid.uuid4().hex[:4]}", concurrency=concurrency,
                                 PFSYNC_QUEUE_NAME=queue)  # fmt: skip
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def business(client: Any) -> dict[str, Any]:
    """A business of the test's partner."""
    response = client.post("/sync/businesses", json={"external_id": "biz-main", "name": "Main Street Salon"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def batch_url(business_id: str) -> str:
    return f"/sync/businesses/{business_id}/customers/batch"


def all_results(client: Any, job_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every result of a job, read page by page through the JSON API."""
    results: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": 1000, **params} | ({"starting_after": cursor} if cursor else {})
        page = client.get(f"/jobs/{job_id}/results", params=query).json()
        results += page["data"]
        if not page["has_more"]:
            return results
        cursor = page["next_cursor"]


def customer_count(business_id: str) -> int:
    """How many customers the business has in the database."""
    from sqlalchemy import text

    from core.db import session_scope

    with session_scope() as session:
        count = session.execute(
            text("SELECT count(*) FROM customers WHERE business_id = :b"), {"b": business_id}
        ).scalar_one()
    return int(count)
