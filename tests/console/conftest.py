"""The console's fixtures: a real `pfsync api` process and a Celery worker on a queue of their own (for this
package only), operators of each role, and helpers to sign in, read a form's CSRF token and submit batches."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.db import session_scope
from core.jobs.service import accept_batch
from core.operators.service import create_operator
from tests.conftest import REDIS_URL, PartnerKey
from tests.e2e.conftest import Process, api_process, wait_for, worker_process

QUEUE = f"pfsync-test-console-{uuid.uuid4().hex[:8]}"
FINISHED = ("completed", "cancelled", "failed")


@dataclass(frozen=True)
class Operator:
    username: str
    password: str
    role: str


@dataclass
class Console:
    """The API process serving the console, its log, and the worker behind it."""

    url: str
    api: Process
    worker: Process


@pytest.fixture(scope="package")
def console_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="package")
def console(console_log_dir: Path) -> Iterator[Console]:
    """`pfsync api` (one process) and a worker, both on this package's queue; stopped when the package is done."""
    worker = worker_process(console_log_dir, name="console-worker", PFSYNC_QUEUE_NAME=QUEUE).start()
    api, url = api_process(console_log_dir, "console-api", "--workers", "1", PFSYNC_QUEUE_NAME=QUEUE)
    yield Console(url, api, worker)
    api.stop()
    worker.stop()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(QUEUE, f"_kombu.binding.{QUEUE}")
    finally:
        client.close()


def make_operator(role: str) -> Operator:
    username = f"{role}-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        created = create_operator(session, username=username, role=role)
    return Operator(created.username, created.password, created.role)


@pytest.fixture
def admin() -> Operator:
    return make_operator("admin")


@pytest.fixture
def viewer() -> Operator:
    return make_operator("viewer")


@contextmanager
def sign_in(console: Console, operator: Operator) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the console as `operator` (through the form, as a browser does)."""
    with httpx.Client(base_url=console.url, timeout=30) as client:
        response = client.post("/console/login", data={"username": operator.username, "password": operator.password})
        assert response.status_code == 303, response.text
        assert "pfsync_console" in client.cookies
        yield client


def csrf_token(html: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


def partner_client(console: Console, partner: PartnerKey) -> httpx.Client:
    return httpx.Client(base_url=console.url, auth=partner.auth, timeout=30)


def submit_businesses(console: Console, partner: PartnerKey, records: list[Any]) -> dict[str, Any]:
    """A batch of businesses through the partner API; its job as accepted."""
    with partner_client(console, partner) as client:
        response = client.post("/sync/businesses/batch", json={"businesses": records})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_finished(console: Console, partner: PartnerKey, job_id: str, timeout: float = 60) -> dict[str, Any]:
    with partner_client(console, partner) as client:

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
            return job if job["status"] in FINISHED else None

        result: dict[str, Any] = wait_for(finished, timeout, 0.1, f"job {job_id}")
        return result


def mixed_records(count: int, prefix: str) -> list[Any]:
    """Businesses of which some fail, each way a record fails: a missing name, an unknown field, not an object,
    and duplicates."""
    records: list[Any] = []
    for i in range(count):
        if i % 10 == 3:
            records.append({"external_id": f"{prefix}-{i}"})
        elif i % 10 == 6:
            records.append({"external_id": f"{prefix}-{i}", "name": "N", "colour": "blue"})
        elif i % 10 == 8:
            records.append("not an object")
        else:
            records.append({"external_id": f"{prefix}-{i}", "name": f"Business {i}"})
    records += [{"external_id": f"{prefix}-dup", "name": "A"}, {"external_id": f"{prefix}-dup", "name": "B"}]
    return records


def waiting_job(partner: PartnerKey, count: int = 5) -> str:
    """A job accepted and committed but never published: it waits, queued, until someone cancels it."""
    with session_scope() as session:
        accepted = accept_batch(
            session,
            partner_id=partner.partner_id,
            kind="businesses",
            business_id=None,
            elements=[{"external_id": f"w{i}", "name": "Waiting"} for i in range(count)],
            api_key_id=partner.key_id,
        )
        return accepted.job.id
