"""Engine and session scope, one engine per process."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.config import NotConfigured, settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker[Session] | None = None


def database_url() -> str:
    """The configured PostgreSQL URL; `NotConfigured` when `DATABASE_URL` is unset."""
    if not settings.database_url:
        raise NotConfigured("DATABASE_URL is not set")
    return settings.database_url


def get_engine() -> Engine:
    """This process's engine, created on first use (and again after a fork)."""
    global _engine, _engine_pid, _sessionmaker
    with _lock:
        if _engine is None or _engine_pid != os.getpid():
            _engine = create_engine(
                database_url(),
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_pool_size,
                pool_timeout=settings.db_pool_timeout_seconds,
                # Instead of a ping (a round trip) at every checkout, `_check_alive`.
                pool_pre_ping=False,
                pool_recycle=1800,
                # Short OLTP statements: parallel workers cost more to start than they save, on few cores; and
                # JIT compilation, which PostgreSQL starts for any statement its planner estimates as costly, added
                # from a few percent to half again to a chunk's row load on a table without statistics (`python -m
                # benchmarks.hotpath`): a thousand single-row index probes, estimated as far more.
                connect_args={
                    "connect_timeout": 5,
                    "application_name": "pfsync",
                    "options": "-c max_parallel_workers_per_gather=0 -c jit=off",
                },
                # jsonb stores a JSON number such as 1e20 as an integer literal, which the json module would read
                # back as an int beyond 64 bits that no response can serialize; orjson reads it as a float, as
                # the API parsed it on the way in.
                json_deserializer=orjson.loads,
            )
            event.listen(_engine, "checkout", _check_alive)
            _engine_pid = os.getpid()
            _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def _check_alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Before a pooled connection is handed out: make sure the server has not closed it (a restart, a crash, a
    terminated backend), so that no request fails on a connection that died idle in the pool.

    An idle connection has nothing to read, so one whose socket is readable has been closed or told something by
    the server: only then is it pinged, and a failed ping invalidates every connection pooled before it, as
    `pool_pre_ping` does (the pool then hands out a new one). A ping at every checkout cost each request a round
    trip."""
    conn: psycopg.Connection[Any] = dbapi_connection
    try:
        poll = select.poll()
        poll.register(conn.fileno(), select.POLLIN)
        if not poll.poll(0):
            return
    except (psycopg.Error, OSError) as err:  # closed already
        raise exc.InvalidatePoolError() from err
    autocommit = conn.autocommit
    try:
        conn.autocommit = True
        conn.execute("SELECT 1")
        conn.autocommit = autocommit
    except psycopg.Error as err:
        raise exc.InvalidatePoolError() from err


_probe: tuple[int, Engine] | None = None


def probe_engine() -> Engine:
    """An engine without a pool, for health checks: a fresh connection each time, so a check never waits behind
    requests for a pooled one."""
    global _probe
    with _lock:
        if _probe is None or _probe[0] != os.getpid():
            _probe = (
                os.getpid(),
                create_engine(
                    database_url(),
                    poolclass=NullPool,
                    connect_args={"connect_timeout": 3, "application_name": "pfsync"},
                ),
            )
        return _probe[1]


def dispose_engine() -> None:
    """Forget this process's engine without touching connections a parent process may share."""
    global _engine, _engine_pid
    with _lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None
        _engine_pid = None


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Run `callback` once the session's transaction has committed (to publish to the broker: never before the
    work it announces is durable). The one way to act after a commit, at every edge."""
    session.info.setdefault("after_commit", []).append(callback)


def commit(session: Session) -> None:
    """Commit and close the session (rolled back if the commit fails), then run its after-commit callbacks; a
    failing callback is logged (what it announces is durable, and the sweeper announces it again)."""
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    for callback in session.info.pop("after_commit", []):
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")


def roll_back(session: Session) -> None:
    """Roll back and close the session; its after-commit callbacks are dropped."""
    session.info.pop("after_commit", None)
    try:
        session.rollback()
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session for a unit of work at an edge (a task, a script): committed when the block ends, then its
    after-commit callbacks run; rolled back on an exception."""
    session = new_session()
    try:
        yield session
    except BaseException:
        roll_back(session)
        raise
    commit(session)


def new_session() -> Session:
    """A bare session; the caller commits and closes it."""
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker()


@contextmanager
def autocommit_connection() -> Iterator[psycopg.Connection[Any]]:
    """A connection of this process's pool as the driver's own, in autocommit mode, for work that opens and ends
    its transactions in its own statements to spare round trips (the single-record sync). It goes back to the pool
    with no transaction open (rolled back if one is) and out of autocommit mode; one that broke is dropped."""
    pooled = get_engine().raw_connection()
    conn = pooled.driver_connection
    assert isinstance(conn, psycopg.Connection)
    try:
        conn.autocommit = True
        yield conn
    finally:
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = False
        except psycopg.Error:
            pooled.invalidate()
        pooled.close()
