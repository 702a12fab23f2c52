"""Test fixtures: a fresh database per run on a real PostgreSQL, a real Redis, partners with API keys.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` name servers to use (CI uses the machine's); unset, the suite starts the
embedded PostgreSQL and Redis under `.pfsync-test/`, so it runs on a machine that has only Python.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA_DIR = ROOT / ".pfsync-test"
_DB_NAME = f"pfsync_test_{uuid.uuid4().hex[:8]}"
_embedded_redis = None


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from cli.embedded import ensure_postgres

    return ensure_postgres(TEST_DATA_DIR)


def _redis_url() -> str:
    global _embedded_redis
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        return url
    from cli.embedded import EmbeddedRedis

    _embedded_redis = EmbeddedRedis(TEST_DATA_DIR)
    return _embedded_redis.start().rsplit("/", 1)[0] + "/0"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Configure the process before any application module reads its settings.
_server = _server_url()
_admin = _libpq(_server)
with psycopg.connect(_admin, autocommit=True) as _conn:
    _conn.execute(f'CREATE DATABASE "{_DB_NAME}"')
DATABASE_URL = make_url(_libpq(_server)).set(database=_DB_NAME).render_as_string(hide_password=False)
REDIS_URL = _redis_url()
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["REDIS_URL"] = REDIS_URL
os.environ.setdefault("PFSYNC_LOG_JSON", "true")
os.environ["PFSYNC_QUEUE_NAME"] = f"pfsync-test-{uuid.uuid4().hex[:6]}"
# Every request of the suite spends a budget (and answers with its RateLimit fields), one roomy enough that only
# the tests of budgets (tests/e2e/test_budgets.py, with their own) run out of it.
os.environ.setdefault("PFSYNC_RATE_LIMIT_PER_SECOND", "1000")
os.environ.setdefault("PFSYNC_RATE_LIMIT_BURST", "2000")

from core.config import settings  # noqa: E402

settings.database_url = "postgresql+psycopg://" + DATABASE_URL.split("://", 1)[1]
settings.redis_url = REDIS_URL
settings.queue_name = os.environ["PFSYNC_QUEUE_NAME"]
settings.rate_limit_per_second = int(os.environ["PFSYNC_RATE_LIMIT_PER_SECOND"])
settings.rate_limit_burst = int(os.environ["PFSYNC_RATE_LIMIT_BURST"])


def pytest_sessionstart(session: pytest.Session) -> None:  # noqa: ARG001
    from core.db import get_engine
    from core.migrate import upgrade

    upgrade(get_engine())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:  # noqa: ARG001
    from core.db import dispose_engine, get_engine

    get_engine().dispose()
    dispose_engine()
    try:
        with psycopg.connect(_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_DB_NAME}" WITH (FORCE)')
    except psycopg.Error:
        pass
    if _embedded_redis is not None:
        _embedded_redis.stop()


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and machine code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"]
    assert body["detail"]
    return body


@dataclass(frozen=True)
class PartnerKey:
    partner_id: str
    key_id: str
    secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.key_id, self.secret)


def make_partner(name: str = "test partner") -> PartnerKey:
    from core.db import session_scope
    from core.partners.service import create_partner

    with session_scope() as session:
        key = create_partner(session, name=name)
    return PartnerKey(key.partner_id, key.key_id, key.secret)


@pytest.fixture
def partner() -> PartnerKey:
    """A new partner (so every test has its own data) with an API key."""
    return make_partner()


@pytest.fixture
def other_partner() -> PartnerKey:
    return make_partner("other partner")


@pytest.fixture(scope="session")
def app_client() -> Iterator[object]:
    from fastapi.testclient import TestClient

    from api.app import app

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(app_client: object, partner: PartnerKey) -> object:
    """A test client that signs requests as `partner`."""
    from fastapi.testclient import TestClient

    assert isinstance(app_client, TestClient)
    app_client.auth = partner.auth
    return app_client
