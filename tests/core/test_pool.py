"""The connection pool: a connection the server closed while it sat in the pool is never handed out."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text

from core.db import autocommit_connection, database_url, get_engine, new_session


def _terminate_pooled_backends() -> int:
    """Terminate every backend of this process's pool (as a restart of the server would), from outside it."""
    held = [get_engine().raw_connection() for _ in range(3)]  # so that the pool holds more than one
    pids = {pooled.dbapi_connection.info.backend_pid for pooled in held}  # type: ignore[union-attr]
    for pooled in held:
        pooled.close()
    url = database_url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    return len(pids)


def test_a_session_gets_a_live_connection_after_its_backends_were_terminated() -> None:
    assert _terminate_pooled_backends()
    session = new_session()
    try:
        assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        session.close()


def test_the_single_sync_connection_is_live_after_its_backends_were_terminated() -> None:
    assert _terminate_pooled_backends()
    with autocommit_connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
