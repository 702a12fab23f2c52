"""SQL for businesses and customers: load the rows a list of records names, and write a sync plan.

A plan is written in a handful of set-based statements whatever its size: the rows go into a per-connection
staging table by COPY, then one UPDATE and one INSERT move them into place (DESIGN.md: parse once, validate once,
write once). Any sign that a concurrent writer got in between (a unique violation, a deadlock, an insert that did
not land) rolls back to a savepoint and replans from a fresh read.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import errors as pgerrors
from sqlalchemy.orm import Session

from core import ids
from core.errors import FieldError
from core.sync import Payload, Plan, RecordOutcome, Row, Scope, plan_records

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRYABLE = (
    pgerrors.UniqueViolation,
    pgerrors.DeadlockDetected,
    pgerrors.SerializationFailure,
    pgerrors.LockNotAvailable,
)


class Contended(Exception):
    """A concurrent writer changed the rows a plan was built on; plan again."""


def driver_connection(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under a session's current transaction."""
    conn = session.connection().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


_COLUMNS = {
    "businesses": ("external_id", "name", "metadata"),
    "customers": ("external_id", "email_address", "phone_number", "full_name", "metadata"),
}

_STAGE_DDL = {
    "businesses": "CREATE TEMP TABLE IF NOT EXISTS stage_businesses "
    '(op "char", id text, external_id text, name text, metadata jsonb) ON COMMIT DELETE ROWS',
    "customers": "CREATE TEMP TABLE IF NOT EXISTS stage_customers "
    '(op "char", id text, external_id text, email_address text, phone_number text, full_name text, '
    "metadata jsonb) ON COMMIT DELETE ROWS",
}


def _keys(
    records: Sequence[tuple[int, Payload | list[FieldError]]],
) -> tuple[list[str], list[str], list[str]]:
    id_list: list[str] = []
    xids: list[str] = []
    emails: list[str] = []
    for _, payload in records:
        if isinstance(payload, list):
            continue
        if payload.id is not None:
            id_list.append(payload.id)
        if payload.external_id is not None:
            xids.append(payload.external_id)
        email = getattr(payload, "email_address", None)
        if email is not None:
            emails.append(email.lower())
    return id_list, xids, emails


def load_rows(
    cur: psycopg.Cursor[Any], scope: Scope, records: Sequence[tuple[int, Payload | list[FieldError]]]
) -> list[Row]:
    """Lock and return every row of the scope that the records name by id, external_id or email address."""
    id_list, xids, emails = _keys(records)
    if not (id_list or xids or emails):
        return []
    if scope.kind == "businesses":
        # One index probe per key and index (an OR of the three would scan the whole scope); rows locked in id
        # order so that overlapping chunks cannot deadlock on them.
        cur.execute(
            "SELECT id, external_id, name, metadata::text, last_seq FROM businesses WHERE id IN ("
            " SELECT id FROM businesses WHERE partner_id = %(scope)s AND id = ANY(%(ids)s)"
            " UNION ALL SELECT id FROM businesses WHERE partner_id = %(scope)s AND external_id = ANY(%(xids)s)"
            ") ORDER BY id FOR UPDATE",
            {"scope": scope.partner_id, "ids": id_list, "xids": xids},
        )
        return [
            {"id": r[0], "external_id": r[1], "name": r[2], "metadata": orjson.loads(r[3]), "last_seq": r[4]}
            for r in cur.fetchall()
        ]
    cur.execute(
        "SELECT id, external_id, email_address, phone_number, full_name, metadata::text, last_seq FROM customers "
        "WHERE id IN ("
        " SELECT id FROM customers WHERE business_id = %(scope)s AND id = ANY(%(ids)s)"
        " UNION ALL SELECT id FROM customers WHERE business_id = %(scope)s AND external_id = ANY(%(xids)s)"
        " UNION ALL SELECT id FROM customers WHERE business_id = %(scope)s AND lower(email_address) = ANY(%(emails)s)"
        ") ORDER BY id FOR UPDATE",
        {"scope": scope.business_id, "ids": id_list, "xids": xids, "emails": emails},
    )
    return [
        {
            "id": r[0],
            "external_id": r[1],
            "email_address": r[2],
            "phone_number": r[3],
            "full_name": r[4],
            "metadata": orjson.loads(r[5]),
            "last_seq": r[6],
        }
        for r in cur.fetchall()
    ]


def _stage(cur: psycopg.Cursor[Any], scope: Scope, plan: Plan) -> None:
    table = f"stage_{scope.kind}"
    columns = _COLUMNS[scope.kind]
    cur.execute(_STAGE_DDL[scope.kind])
    with cur.copy(f"COPY {table} (op, id, {', '.join(columns)}) FROM STDIN") as copy:
        for op, rows in (("r", plan.replaces), ("c", plan.creates)):
            for row in rows:
                copy.write_row(
                    (
                        op,
                        row["id"],
                        *(row[c] if c != "metadata" else orjson.dumps(row[c]).decode() for c in columns),
                    )
                )


# Up to this many rows, a plan's rows travel as statement parameters; beyond, by COPY into the staging table.
SMALL_PLAN = 32


def _source(scope: Scope, rows: list[Row], op: str, staged: bool) -> tuple[str, list[Any]]:
    """A FROM item `s(id, <columns>)` holding a plan's rows of one kind, and its parameters."""
    columns = _COLUMNS[scope.kind]
    names = f"s(id, {', '.join(columns)})"
    if staged:
        return f"(SELECT id, {', '.join(columns)} FROM stage_{scope.kind} WHERE op = '{op}') AS {names}", []
    # `metadata` is the last column of both kinds.
    one = "(" + ", ".join(["%s::text"] * len(columns) + ["%s::jsonb"]) + ")"
    params: list[Any] = []
    for row in rows:
        params.append(row["id"])
        params.extend(row[c] if c != "metadata" else orjson.dumps(row[c]).decode() for c in columns)
    return f"(VALUES {', '.join([one] * len(rows))}) AS {names}", params


def write_plan(cur: psycopg.Cursor[Any], scope: Scope, seq: int, plan: Plan) -> None:
    """Write a plan's creates, replaces and sequence bumps."""
    table = scope.kind
    columns = _COLUMNS[table]
    if plan.release_first:
        cleared = "external_id = NULL" + (", email_address = NULL" if table == "customers" else "")
        cur.execute(f"UPDATE {table} SET {cleared} WHERE id = ANY(%s)", (sorted(plan.release_first),))
    staged = len(plan.creates) + len(plan.replaces) > SMALL_PLAN
    if staged:
        _stage(cur, scope, plan)
    if plan.replaces:
        source, params = _source(scope, plan.replaces, "r", staged)
        assignments = ", ".join(f"{c} = s.{c}" for c in columns)
        cur.execute(
            f"UPDATE {table} t SET {assignments}, updated_at = now(), last_seq = %s FROM {source} WHERE t.id = s.id",
            (seq, *params),
        )
    if plan.creates:
        owner = "partner_id" if table == "businesses" else "business_id, partner_id"
        owner_values: tuple[Any, ...] = (
            (scope.partner_id,) if table == "businesses" else (scope.business_id, scope.partner_id)
        )
        placeholders = ", ".join(["%s"] * len(owner_values))
        source, params = _source(scope, plan.creates, "c", staged)
        cur.execute(
            f"INSERT INTO {table} (id, {owner}, {', '.join(columns)}, last_seq) "
            f"SELECT s.id, {placeholders}, {', '.join('s.' + c for c in columns)}, %s "
            f"FROM {source} ORDER BY s.external_id, s.id ON CONFLICT DO NOTHING",
            (*owner_values, seq, *params),
        )
        if cur.rowcount != len(plan.creates):
            raise Contended(f"{len(plan.creates) - cur.rowcount} inserts lost to a concurrent writer")
    if plan.touches:
        cur.execute(f"UPDATE {table} SET last_seq = %s WHERE id = ANY(%s) AND last_seq < %s", (seq, plan.touches, seq))


def apply_records(
    session: Session,
    *,
    scope: Scope,
    seq: int,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
    create_only: bool = False,
) -> list[RecordOutcome]:
    """Apply records by the sync rules inside the session's transaction; return each record's outcome.

    `create_only`: see `core.sync.plan_records`.
    """
    prefix = "biz" if scope.kind == "businesses" else "cus"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                cur = driver_connection(session).cursor()
                rows = load_rows(cur, scope, records)
                plan = plan_records(
                    scope=scope,
                    seq=seq,
                    records=records,
                    rows=rows,
                    new_id=lambda: ids.new_id(prefix),
                    create_only=create_only,
                )
                write_plan(cur, scope, seq, plan)
                return plan.outcomes
        except (Contended, *RETRYABLE) as exc:
            if attempt == MAX_ATTEMPTS:
                raise
            log.info("sync contended (%s), attempt %d: %s", type(exc).__name__, attempt, exc)
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise AssertionError("unreachable")


def apply_isolating(
    session: Session,
    *,
    scope: Scope,
    seq: int,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
) -> list[RecordOutcome]:
    """`apply_records`, but a record the database rejects fails alone: the list is split in halves until the
    bad records are isolated (a savepoint per half, never one per row)."""
    try:
        return apply_records(session, scope=scope, seq=seq, records=records)
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        if len(records) == 1:
            index = records[0][0]
            message = exc.diag.message_primary or type(exc).__name__
            log.warning("record %d rejected by the database: %s", index, message)
            error = FieldError("rejected_by_database", f"the database refused this record: {message}", None)
            return [RecordOutcome(index, "failed", errors=[error])]
        middle = len(records) // 2
        return apply_isolating(session, scope=scope, seq=seq, records=records[:middle]) + apply_isolating(
            session, scope=scope, seq=seq, records=records[middle:]
        )
