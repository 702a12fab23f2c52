"""The Alembic migrations build exactly the schema the ORM models describe, and are reversible."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection, make_url

from core.config import settings
from core.db import get_engine
from core.migrate import alembic_config, current_revision, head_revision
from core.models import Base


def _schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, Base.metadata))


def test_the_migrated_test_database_matches_the_models() -> None:
    with get_engine().connect() as conn:
        assert current_revision(conn) == head_revision()
        assert _schema_diff(conn) == []


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    assert settings.database_url is not None
    url = make_url(settings.database_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"pfsync_scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_downgrade_to_base_and_upgrade_again(scratch_database_url: str) -> None:
    config = alembic_config(scratch_database_url)
    engine = create_engine(scratch_database_url)
    try:
        command.upgrade(config, "head")
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert set(Base.metadata.tables) <= tables

        command.downgrade(config, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
            assert inspect(conn).get_sequence_names() == []
            assert current_revision(conn) is None

        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert _schema_diff(conn) == []
    finally:
        engine.dispose()
