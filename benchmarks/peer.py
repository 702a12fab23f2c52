"""The bare peer of single-record sync: what FastAPI and psycopg alone do on this machine.

One route, `POST /customers`: a small JSON body parsed and validated by FastAPI into a pydantic model, then one
`INSERT … ON CONFLICT (business_id, external_id) DO UPDATE … RETURNING` through a psycopg_pool ConnectionPool,
answered as JSON. No authentication, no sync rules, no idempotency, no access log, no metrics, no stale-write guard.
Like the service's sync routes it is a plain `def` (FastAPI runs it on its thread pool).

    PEER_DATABASE_URL=postgresql://… uvicorn benchmarks.peer:app --workers N

benchmarks/bench.py creates its table (`PEER_TABLE_DDL`) in the scratch database and runs it with as many
uvicorn processes as `pfsync api` runs, in the single-sync phase, with the same clients as the service gets.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

PEER_TABLE = "peer_customers"
# The columns and types of the service's customers table, with only the sync rules' keys; no foreign key.
PEER_TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {PEER_TABLE} (
    id text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    business_id text NOT NULL,
    external_id text,
    email_address text,
    phone_number text,
    full_name text,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (business_id, external_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS {PEER_TABLE}_email ON {PEER_TABLE} (business_id, lower(email_address));
"""
BUSINESS_ID = "peer"
UPSERT = f"""
INSERT INTO {PEER_TABLE} AS t (business_id, external_id, email_address, phone_number, full_name, metadata)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (business_id, external_id) DO UPDATE SET email_address = EXCLUDED.email_address,
    phone_number = EXCLUDED.phone_number, full_name = EXCLUDED.full_name, metadata = EXCLUDED.metadata,
    updated_at = now()
RETURNING id, external_id, email_address, phone_number, full_name, metadata, created_at, updated_at,
    (xmax = 0) AS created
"""
COLUMNS = ("id", "external_id", "email_address", "phone_number", "full_name", "metadata", "created_at", "updated_at")


class CustomerIn(BaseModel):
    external_id: str
    email_address: str | None = None
    phone_number: str | None = None
    full_name: str | None = None
    metadata: dict[str, Any] = {}


_pool: ConnectionPool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # One pool per process, opened in the process that serves (uvicorn's workers import the app themselves);
    # the service's default pool size.
    global _pool
    _pool = ConnectionPool(os.environ["PEER_DATABASE_URL"], min_size=4, max_size=10, open=True)
    try:
        yield
    finally:
        _pool.close()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/customers")
def upsert_customer(customer: CustomerIn) -> dict[str, Any]:
    assert _pool is not None
    with _pool.connection() as conn:
        row = conn.execute(
            UPSERT,
            (
                BUSINESS_ID,
                customer.external_id,
                customer.email_address,
                customer.phone_number,
                customer.full_name,
                Jsonb(customer.metadata),
            ),
        ).fetchone()
    assert row is not None
    document = dict(zip(COLUMNS, row[:-1], strict=True))
    document["outcome"] = "created" if row[-1] else "replaced"
    return document
