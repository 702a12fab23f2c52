"""Readiness: the database answers, its schema is current, and the broker answers."""

from __future__ import annotations

import redis

from core.db import probe_engine
from core.migrate import current_revision, head_revision
from core.ops import repository
from core.ops.broker import broker_url


def check_database() -> str | None:
    """None when the database answers at the latest migration, else what is wrong."""
    try:
        with probe_engine().connect() as conn:
            repository.ping(conn)
            current = current_revision(conn)
    except Exception as exc:
        return f"database unreachable: {type(exc).__name__}"
    head = head_revision()
    if current != head:
        return f"schema at {current}, expected {head}: run `pfsync migrate`"
    return None


def check_broker() -> str | None:
    """None when the broker answers PING, else what is wrong."""
    try:
        client = redis.Redis.from_url(broker_url(), socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"broker unreachable: {type(exc).__name__}"
    return None
