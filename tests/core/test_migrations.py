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


def test_customers_are_stored_as_the_model_says_and_a_replace_touches_no_index() -> None:
    """Half-filled pages (migration 0009, which the model's comparison above does not see): replacing every
    customer of a business in one transaction, as a batch does, writes each new version beside the old one (a HOT
    update), so no index gets a new entry. (A version that grows may not fit beside the old one.)"""
    declared = Base.metadata.tables["customers"].dialect_options["postgresql"]["with"]
    engine = get_engine()
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        found = raw.execute("SELECT reloptions FROM pg_class WHERE oid = 'customers'::regclass").fetchone()
        options = found[0] if found else None
        assert options == [f"{key}={value}" for key, value in declared.items()]

        partner, business = f"par_hot{uuid.uuid4().hex[:8]}", f"biz_hot{uuid.uuid4().hex[:8]}"
        raw.execute("INSERT INTO partners (id, name) VALUES (%s, 'hot')", (partner,))
        raw.execute("INSERT INTO businesses (id, partner_id, name) VALUES (%s, %s, 'hot')", (business, partner))
        raw.execute(
            "INSERT INTO customers (id, business_id, partner_id, external_id, email_address, full_name, metadata)"
            " SELECT %s || n, %s, %s, 'x' || n, n || '@example.com', 'v1', %s FROM generate_series(1, 500) AS n",
            (f"cus_hot{uuid.uuid4().hex[:8]}_", business, partner, '{"v": 1}'),
        )
        raw.commit()
        try:
            raw.execute(
                "UPDATE customers SET full_name = 'v2', metadata = %s, updated_at = now() WHERE business_id = %s",
                ('{"v": 2}', business),
            )
            (updated, hot) = raw.execute(
                "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid)"
                " FROM pg_class c WHERE c.oid = 'customers'::regclass"
            ).fetchone() or (0, 0)
            assert (updated, hot) == (500, 500)
        finally:
            raw.rollback()
            raw.execute("DELETE FROM businesses WHERE id = %s", (business,))
            raw.execute("DELETE FROM partners WHERE id = %s", (partner,))
            raw.commit()
