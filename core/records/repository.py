"""SQL for businesses and customers: load the rows a list of records names, and write a sync plan.

A plan is written in a handful of set-based statements whatever its size: one UPDATE and one INSERT, each given
its rows as one JSON document (DESIGN.md: parse once, validate once, write once). Any sign that a concurrent
writer got in between (a unique violation, a deadlock, an insert that did not land) rolls back to a savepoint
and replans from a fresh read. A dry run (`preview_records`) reads the same rows without locking them and writes
nothing, so it never waits for a real write nor makes one wait.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
import typing
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import ids
from core.errors import FieldError, not_found
from core.models import Business, Customer
from core.records.rules import Payload, Plan, Preview, RecordOutcome, Row, Scope, plan_records, preview
from core.records.schemas import WRITABLE

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


def _probe(table: str, scope_column: str, key: str, column: str, *, also: str = "", unless: str = "") -> str:
    """The ids of the rows of the scope whose `column` is one of the values in the parameter `key` (and `also`, a
    column of theirs); `unless`: a condition on a value (`k.v`) that spares its lookup."""
    keys = f"unnest(%({key})s::text[], array_fill(%(scope)s::text, ARRAY[%(n_{key})s::int])) AS k(v, s)"
    if unless:
        keys = f"(SELECT * FROM {keys} WHERE NOT ({unless}) OFFSET 0) AS k"
    extra = f", {also}" if also else ""
    return (
        f"SELECT p.* FROM {keys}"
        f" CROSS JOIN LATERAL (SELECT id{extra} FROM {table} WHERE {scope_column} = k.s AND {column} = k.v OFFSET 0)"
        " AS p"
    )


def _load(table: str, columns: str, probes: tuple[str, ...], *, lock: bool, known: tuple[str, ...] = ()) -> str:
    """Read the rows the probes find, in id order, each looked up by its own index probe; `lock`: lock them too.
    `known`: probes whose rows the others may refer to as `known` (with `WITH known AS (…)`).

    Written so that the planner has no other plan to choose, whatever its statistics say. Each key is looked up by
    a lateral subquery of its own (OFFSET 0 keeps it from being merged into a join, which could run as a hash join
    over the whole table), with the scope as a column of the keys rather than a constant: given `business_id =
    'biz_…'`, the planner estimates the business's rows from statistics, which know nothing of a business that grew
    since the last ANALYZE (a new one holds "1 row"), and would read the whole business through an index that
    starts with business_id, for every key. Per key, with both values unknown to it, the unique index on both is
    always its cheapest path. The rows found are then read (and locked) one by one through the primary key, in id
    order, so that overlapping chunks cannot deadlock. (Unlocked, that read needs its own OFFSET 0: the FOR UPDATE
    is what keeps the planner from turning it into a join over the whole table.)
    """
    prefix = ""
    if known:
        prefix = f"WITH known AS MATERIALIZED ({' UNION ALL '.join(known)}) "
        probes = ("SELECT id FROM known", *probes)
    found = " UNION ALL ".join(probes)
    row = f"SELECT {columns} FROM {table} WHERE id = f.id" + (" FOR UPDATE" if lock else " OFFSET 0")
    return (
        f"{prefix}SELECT r.* FROM (SELECT id FROM ({found}) AS found GROUP BY id ORDER BY id OFFSET 0) AS f"
        f" CROSS JOIN LATERAL ({row}) AS r"
    )


_COLUMNS = {
    "businesses": "id, external_id, name, metadata::text, last_seq",
    "customers": "id, external_id, email_address, phone_number, full_name, metadata::text, last_seq",
}
# A customer found by its id or external_id whose email address a record names too is the only one that can hold
# it (it is unique in the business): that address is not looked up again. A replace of a customer under the same
# external_id and email address, the common case, takes one index probe instead of two.
_KNOWN = "lower(email_address) AS email"
_LOAD = {
    ("businesses", lock): _load(
        "businesses",
        _COLUMNS["businesses"],
        (_probe("businesses", "partner_id", "ids", "id"), _probe("businesses", "partner_id", "xids", "external_id")),
        lock=lock,
    )
    for lock in (True, False)
} | {
    ("customers", lock): _load(
        "customers",
        _COLUMNS["customers"],
        (
            _probe(
                "customers",
                "business_id",
                "emails",
                "lower(email_address)",
                unless="k.v IN (SELECT email FROM known WHERE email IS NOT NULL)",
            ),
        ),
        lock=lock,
        known=(
            _probe("customers", "business_id", "ids", "id", also=_KNOWN),
            _probe("customers", "business_id", "xids", "external_id", also=_KNOWN),
        ),
    )
    for lock in (True, False)
}


def text_array(values: list[str]) -> str:
    """A `text[]` literal: psycopg adapts a list element by element in Python, this is one join (keys hold no NUL)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _key_arrays(**keys: list[str]) -> dict[str, Any]:
    return {name: text_array(values) for name, values in keys.items()} | {
        f"n_{name}": len(values) for name, values in keys.items()
    }


def load_rows(
    cur: psycopg.Cursor[Any],
    scope: Scope,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
    *,
    lock: bool = True,
) -> list[Row]:
    """Lock (unless `lock` is false) and return every row of the scope that the records name by id, external_id or
    email address.

    Never as a prepared statement (psycopg prepares a query it has run five times on a connection): PostgreSQL would
    then keep one generic plan for the connection's life, made with the sizes of the time. Made while the table was
    empty (a new database, a worker's first chunks) that plan looks each key up by the scope alone and filters the
    key, reading the whole business per key once the business has grown: 15 s a chunk of 1000 against 100 000
    stored customers instead of 30 ms. Planned each time (well under a millisecond), the lookups follow the table.
    """
    id_list, xids, emails = _keys(records)
    if not (id_list or xids or emails):
        return []
    if scope.kind == "businesses":
        cur.execute(
            _LOAD["businesses", lock],
            {"scope": scope.partner_id, **_key_arrays(ids=id_list, xids=xids)},
            prepare=False,
        )
        return [
            {"id": r[0], "external_id": r[1], "name": r[2], "metadata": orjson.loads(r[3]), "last_seq": r[4]}
            for r in cur.fetchall()
        ]
    cur.execute(
        _LOAD["customers", lock],
        {"scope": scope.business_id, **_key_arrays(ids=id_list, xids=xids, emails=emails)},
        prepare=False,
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


def _source(scope: Scope, rows: list[Row]) -> tuple[str, str]:
    """A FROM item `s(id, <columns>)` holding a plan's rows of one kind, and its one parameter.

    The rows travel as a single JSON array of arrays, serialized by orjson in one call and unpacked by the server:
    no staging table to create and fill row by row (COPY cost about twice the client CPU), and one shape for a
    plan of one row (a single sync) or of a whole chunk.
    """
    columns = WRITABLE[scope.kind]
    # `metadata` is the last column of both kinds: a JSON value; the others are text.
    fields = [f"r ->> {i}" for i in range(len(columns))] + [f"r -> {len(columns)}"]
    row_values = itemgetter("id", *columns)  # a tuple, which orjson writes as an array
    document = orjson.dumps([row_values(row) for row in rows]).decode()
    return (
        f"(SELECT {', '.join(fields)} FROM jsonb_array_elements(%s::jsonb) AS r) AS s(id, {', '.join(columns)})",
        document,
    )


def write_plan(cur: psycopg.Cursor[Any], scope: Scope, seq: int, plan: Plan) -> None:
    """Write a plan's creates, replaces and sequence bumps."""
    table = scope.kind
    columns = WRITABLE[table]
    if plan.release_first:
        cleared = "external_id = NULL" + (", email_address = NULL" if table == "customers" else "")
        cur.execute(f"UPDATE {table} SET {cleared} WHERE id = ANY(%s)", (sorted(plan.release_first),))
    if plan.replaces:
        source, rows = _source(scope, plan.replaces)
        assignments = ", ".join(f"{c} = s.{c}" for c in columns)
        cur.execute(
            f"UPDATE {table} t SET {assignments}, updated_at = now(), last_seq = %s FROM {source} WHERE t.id = s.id",
            (seq, rows),
        )
    if plan.creates:
        owner = "partner_id" if table == "businesses" else "business_id, partner_id"
        owner_values: tuple[Any, ...] = (
            (scope.partner_id,) if table == "businesses" else (scope.business_id, scope.partner_id)
        )
        placeholders = ", ".join(["%s"] * len(owner_values))
        source, rows = _source(scope, plan.creates)
        # Customers have no foreign keys (migration 0007): their business is locked here once, as each row's check
        # would have, so it cannot be deleted before this transaction ends; gone already, nothing is inserted.
        guard, guard_values = (
            (" WHERE EXISTS (SELECT FROM businesses WHERE id = %s FOR KEY SHARE)", (scope.business_id,))
            if table == "customers"
            else ("", ())
        )
        cur.execute(
            f"INSERT INTO {table} (id, {owner}, {', '.join(columns)}, last_seq) "
            f"SELECT s.id, {placeholders}, {', '.join('s.' + c for c in columns)}, %s "
            f"FROM {source}{guard} ORDER BY s.external_id, s.id",
            (*owner_values, seq, rows, *guard_values),
        )
        # A key a concurrent writer took since the rows were read fails the statement (a unique violation: planned
        # again, `apply_records`). No ON CONFLICT clause: its speculative insertion checks every unique index
        # before each row and confirms each row apart, a third of the statement's time.
        if cur.rowcount != len(plan.creates):
            if table == "customers" and cur.rowcount == 0 and not _business_row(cur, scope.business_id):
                raise not_found("business")
            raise Contended(f"{cur.rowcount} of {len(plan.creates)} rows inserted")
    if plan.touches:
        cur.execute(f"UPDATE {table} SET last_seq = %s WHERE id = ANY(%s) AND last_seq < %s", (seq, plan.touches, seq))


def _business_row(cur: psycopg.Cursor[Any], business_id: str | None) -> bool:
    cur.execute("SELECT FROM businesses WHERE id = %s", (business_id,))
    return cur.fetchone() is not None


@contextmanager
def _savepoint(session: Session) -> Iterator[psycopg.Connection[Any]]:
    """A savepoint in the session's transaction, and its driver connection: a contended attempt rolls back to it.

    The driver's own savepoint (every statement of an attempt is the driver's): SQLAlchemy's `begin_nested` took a
    tenth of a single sync's CPU. Only while the transaction has not sent anything yet does SQLAlchemy open it,
    as a savepoint of the driver would then be a transaction of its own, committed on the way out.
    """
    conn = driver_connection(session)
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        with conn.transaction():
            yield conn
    else:
        with session.begin_nested():
            yield conn


def apply_records(
    session: Session,
    *,
    scope: Scope,
    seq: int,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
    create_only: bool = False,
    assume_new: bool = False,
) -> list[RecordOutcome]:
    """Apply records by the sync rules inside the session's transaction; return each record's outcome.

    `create_only`: see `core.records.rules.plan_records`. `assume_new`: the records are likely all new (a job none
    of whose records so far found a stored one), so they are first planned without reading any row: as creates,
    written by the INSERT alone. Any key a stored row holds fails that INSERT (a unique violation, as a key a
    concurrent writer took does): rolled back to the savepoint, the records are then planned over the rows they
    name, as always. A record naming its row by `id` must find it: then the rows are read first.
    """
    prefix = "biz" if scope.kind == "businesses" else "cus"

    def attempt(rows_read: bool) -> list[RecordOutcome]:
        with _savepoint(session) as conn, conn.cursor() as cur:
            rows = load_rows(cur, scope, records) if rows_read else []
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

    if assume_new and not create_only and not any(not isinstance(p, list) and p.id is not None for _, p in records):
        try:
            return attempt(rows_read=False)
        except (Contended, *RETRYABLE) as exc:
            log.debug("records not all new (%s): planned over the rows they name", type(exc).__name__)
    for number in range(1, MAX_ATTEMPTS + 1):
        try:
            return attempt(rows_read=True)
        except (Contended, *RETRYABLE) as exc:
            if number == MAX_ATTEMPTS:
                raise
            log.info("sync contended (%s), attempt %d: %s", type(exc).__name__, number, exc)
            time.sleep(random.uniform(0, 0.02 * number))
    raise AssertionError("unreachable")


def apply_isolating(
    session: Session,
    *,
    scope: Scope,
    seq: int,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
    assume_new: bool = False,
) -> list[RecordOutcome]:
    """`apply_records`, but a record the database rejects fails alone: the list is split in halves until the
    bad records are isolated (a savepoint per half, never one per row)."""
    try:
        return apply_records(session, scope=scope, seq=seq, records=records, assume_new=assume_new)
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        if len(records) == 1:
            index = records[0][0]
            message = exc.diag.message_primary or type(exc).__name__
            log.warning("record %d rejected by the database: %s", index, message)
            error = FieldError("rejected_by_database", f"the database refused this record: {message}", None)
            return [RecordOutcome(index, "failed", errors=[error])]
        middle = len(records) // 2
        return apply_isolating(
            session, scope=scope, seq=seq, records=records[:middle], assume_new=assume_new
        ) + apply_isolating(session, scope=scope, seq=seq, records=records[middle:], assume_new=assume_new)


def read_rows(
    session: Session, *, scope: Scope, records: Sequence[tuple[int, Payload | list[FieldError]]]
) -> list[Row]:
    """Every row of the scope that the records name, read without a lock: what a dry run plans over. It waits for
    no writer and makes none wait."""
    with driver_connection(session).cursor() as cur:
        return load_rows(cur, scope, records, lock=False)


def preview_records(
    session: Session, *, scope: Scope, records: Sequence[tuple[int, Payload | list[FieldError]]]
) -> Preview:
    """A dry run of records against the stored rows they name (`read_rows`, then `core.records.rules.preview`):
    nothing is locked or written and no write sequence is taken."""
    return preview(scope=scope, records=records, rows=read_rows(session, scope=scope, records=records))


def stored_by_ids(session: Session, *, kind: str, ids: Sequence[str]) -> list[Business] | list[Customer]:
    """The stored businesses or customers with these ids (those that exist), as ORM objects."""
    if kind == "businesses":
        return list(session.scalars(select(Business).where(Business.id.in_(ids))))
    return list(session.scalars(select(Customer).where(Customer.id.in_(ids))))


def find_business(session: Session, *, partner_id: str, business_id: str) -> Business | None:
    return session.scalar(select(Business).where(Business.id == business_id, Business.partner_id == partner_id))


def business_exists(session: Session, *, partner_id: str, business_id: str) -> bool:
    """Whether the partner has that business: one plain query, no ORM object."""
    found = (
        driver_connection(session)
        .execute("SELECT 1 FROM businesses WHERE id = %s AND partner_id = %s", (business_id, partner_id))
        .fetchone()
    )
    return found is not None


def find_customer(session: Session, *, partner_id: str, customer_id: str) -> Customer | None:
    return session.scalar(select(Customer).where(Customer.id == customer_id, Customer.partner_id == partner_id))


def customers_by_id(
    session: Session, *, business_id: str, customer_ids: Sequence[str], for_update: bool = False
) -> dict[str, Customer]:
    """The business's customers among `customer_ids`, by id; `for_update` locks them and rereads them."""
    query = select(Customer).where(Customer.business_id == business_id, Customer.id.in_(list(customer_ids)))
    if for_update:
        query = query.order_by(Customer.id).with_for_update().execution_options(populate_existing=True)
    return {c.id: c for c in session.scalars(query)}


def businesses_page(
    session: Session, *, partner_id: str, external_id: str | None, limit: int, starting_after: str | None
) -> Sequence[Business]:
    """Up to `limit` of the partner's businesses after `starting_after`, oldest first."""
    query = select(Business).where(Business.partner_id == partner_id)
    if external_id is not None:
        query = query.where(Business.external_id == external_id)
    if starting_after:
        query = query.where(Business.id > starting_after)
    return session.scalars(query.order_by(Business.id).limit(limit)).all()


def customers_page(
    session: Session,
    *,
    business_id: str,
    external_id: str | None,
    email_address: str | None,
    limit: int,
    starting_after: str | None,
) -> Sequence[Customer]:
    """Up to `limit` of a business's customers after `starting_after`, oldest first; email in any case."""
    query = select(Customer).where(Customer.business_id == business_id)
    if external_id is not None:
        query = query.where(Customer.external_id == external_id)
    if email_address is not None:
        query = query.where(func.lower(Customer.email_address) == email_address.lower())
    if starting_after:
        query = query.where(Customer.id > starting_after)
    return session.scalars(query.order_by(Customer.id).limit(limit)).all()


def next_write_seq(session: Session) -> int:
    """The next write sequence number (SPEC §3 rule 7)."""
    row = driver_connection(session).execute("SELECT nextval('write_seq')").fetchone()
    assert row is not None
    return int(row[0])


def stored_row(session: Session, *, kind: str, record_id: str) -> tuple[Any, ...]:
    """A business or a customer as the API shows it (`VIEW_COLUMNS`), metadata parsed: one plain query, no ORM
    object."""
    with driver_connection(session).cursor() as cur:
        cur.execute(f"SELECT {_selected(VIEW_COLUMNS[kind])} FROM {kind} WHERE id = %s", (record_id,))
        row = cur.fetchone()
    assert row is not None
    return _view_row(kind, row)


def _view_row(kind: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of `VIEW_COLUMNS` as read, its metadata (read as text) parsed."""
    at = VIEW_COLUMNS[kind].index("metadata")
    return (*row[:at], orjson.loads(row[at]), *row[at + 1 :])


# One record in a transaction of its own (the single-record sync routes): the whole sync in two round trips on a
# connection in autocommit mode, each one statement string sent with the simple query protocol, its parameters
# bound on the client (psycopg's `ClientCursor`). The first begins the transaction, takes the write sequence, holds
# the API key live, checks the business and locks the rows the record names; the second writes the plan, reads the
# stored record back through RETURNING, and commits. Pipeline mode would take as many round trips but far more of
# the driver's Python; a savepoint is not needed, as a contended attempt rolls the whole transaction back.
#
# The statements are prepared on the server once a connection (`EXECUTE`): parsing and planning them each time
# was a third of the CPU the server spent on a sync. The lookups by key run on the plan PostgreSQL keeps for the
# statement (its generic plan) once that plan is seen to look every key up by its own index (`_check_plans`):
# planned afresh on every run, they took another third. A plan made while the table is empty, or before its
# statistics knew a business that has grown, reads the whole business per key instead (`load_rows`): until the
# kept plan is a good one, the lookups are planned with their values each time, as the batch path's are. The check
# is made again every `PLAN_CHECK_SECONDS` on a connection, on a plan made afresh with the statistics of the time.

# What the API shows of a record, in `core.records.service`'s `_StoredBusiness` / `_StoredCustomer` order.
VIEW_COLUMNS = {
    "businesses": ("id", "external_id", "name", "metadata", "created_at", "updated_at"),
    "customers": (
        "id",
        "business_id",
        "external_id",
        "email_address",
        "phone_number",
        "full_name",
        "metadata",
        "unsubscribed",
        "created_at",
        "updated_at",
    ),
}
_KINDS = tuple(VIEW_COLUMNS)
_SCOPE_COLUMN = {"businesses": "partner_id", "customers": "business_id"}
_OWNER_COLUMNS = {"businesses": ("partner_id",), "customers": ("business_id", "partner_id")}
_PROBES = {"businesses": ("id", "external_id"), "customers": ("id", "external_id", "lower(email_address)")}


def _selected(columns: tuple[str, ...], alias: str = "") -> str:
    return ", ".join(f"{alias}metadata::text" if c == "metadata" else alias + c for c in columns)


def _load_one(kind: str) -> str:
    """The rows one record names ($2 its id, $3 its external_id, $4 its lower-cased email address; $1 the scope),
    locked in id order, with what the API shows of them: a superseded or unchanged record is answered from here.

    Each key is one probe of a unique index, its values hidden from the planner in sub-selects (as `_load` passes
    them as columns): given `business_id = 'biz_…'`, it would estimate the business's rows from statistics, which
    know nothing of a business that grew since the last ANALYZE, and read the whole business by its first column."""
    probes = " UNION ".join(
        f"SELECT id FROM {kind} WHERE {_SCOPE_COLUMN[kind]} = (SELECT $1) AND {column} = (SELECT ${i})"
        for i, column in enumerate(_PROBES[kind], start=2)
    )
    return (
        f"SELECT {_selected(('last_seq', *VIEW_COLUMNS[kind]), 'r.')} FROM (SELECT id FROM ({probes}) AS found "
        f"ORDER BY id OFFSET 0) AS f CROSS JOIN LATERAL (SELECT * FROM {kind} WHERE id = f.id FOR UPDATE) AS r"
    )


def _insert_one(kind: str) -> str:
    columns = ("id", *_OWNER_COLUMNS[kind], *WRITABLE[kind], "last_seq")
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return (
        f"INSERT INTO {kind} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT DO NOTHING "
        f"RETURNING {_selected(VIEW_COLUMNS[kind])}"
    )


def _update_one(kind: str) -> str:
    columns = WRITABLE[kind]
    assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=1))
    n = len(columns)
    return (
        f"UPDATE {kind} SET {assignments}, updated_at = now(), last_seq = ${n + 1} WHERE id = ${n + 2} "
        f"RETURNING {_selected(VIEW_COLUMNS[kind])}"
    )


def _types(columns: tuple[str, ...]) -> str:
    return ", ".join("jsonb" if c == "metadata" else "bigint" if c == "last_seq" else "text" for c in columns)


# Every statement of a single sync: its name and its PREPARE.
_SINGLE_STATEMENTS: dict[str, str] = {
    # Its sequence ($1 when a retry keeps its own), whether the API key is live (share-locked for the transaction,
    # as `hold_live_key`), whether the partner has the business (customers): key-share-locked too, as a customer's
    # foreign key would, so that it is not deleted under the record before the commit.
    "pfsync_single_checks": "(bigint, text, text, text) AS SELECT COALESCE($1, nextval('write_seq')), "
    "$2 IS NULL OR EXISTS (SELECT FROM api_keys WHERE id = $2 AND revoked_at IS NULL FOR SHARE), "
    "$3 IS NULL OR EXISTS (SELECT FROM businesses WHERE id = $3 AND partner_id = $4 FOR KEY SHARE)",
    **{
        f"pfsync_single_load_{kind}": f"({', '.join(['text'] * (len(_PROBES[kind]) + 1))}) AS {_load_one(kind)}"
        for kind in _KINDS
    },
    **{
        f"pfsync_single_insert_{kind}": f"({_types(('id', *_OWNER_COLUMNS[kind], *WRITABLE[kind], 'last_seq'))}) "
        f"AS {_insert_one(kind)}"
        for kind in _KINDS
    },
    **{
        f"pfsync_single_update_{kind}": f"({_types((*WRITABLE[kind], 'last_seq', 'id'))}) AS {_update_one(kind)}"
        for kind in _KINDS
    },
    **{
        f"pfsync_single_touch_{kind}": f"(bigint, text) AS UPDATE {kind} SET last_seq = $1 "
        "WHERE id = $2 AND last_seq < $1"
        for kind in _KINDS
    },
}
# How often a connection's kept plans of the lookups by key are made afresh and checked (`_check_plans`).
PLAN_CHECK_SECONDS = 60.0


@dataclass(slots=True)
class _Prepared:
    """A connection's single-sync statements: the kinds whose lookups by key run on the kept plan (the others are
    planned on every run), and when that was last checked."""

    kept_plan: frozenset[str] = frozenset()
    checked_at: float = -math.inf


# The connections that have them prepared (a connection that is replaced is a new object).
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Prepared] = weakref.WeakKeyDictionary()


def _prepare_single(conn: psycopg.Connection[Any]) -> _Prepared:
    """Prepare the single sync's statements on this connection, unless it has them, and check the plans of its
    lookups by key (`_check_plans`): one round trip for both, once; then one a minute, for the check."""
    prepared = _prepared.get(conn)
    if prepared is None:
        prepared = _prepared[conn] = _Prepared()
        _check_plans(conn, _PREPARE_ALL, prepared)
    elif time.monotonic() - prepared.checked_at >= PLAN_CHECK_SECONDS:
        try:
            _check_plans(conn, _REMAKE_LOOKUPS, prepared)
        except pgerrors.InvalidSqlStatementName:  # deallocated since they were prepared (`start_single`)
            prepared = _prepared[conn] = _Prepared()
            _check_plans(conn, _PREPARE_ALL, prepared)
    return prepared


_PREPARE_ALL = " ".join(f"PREPARE {name} {text};" for name, text in _SINGLE_STATEMENTS.items())
# The lookups' kept plans made afresh: the statistics may have changed since they were made.
_REMAKE_LOOKUPS = " ".join(
    f"DEALLOCATE {name}; PREPARE {name} {_SINGLE_STATEMENTS[name]};"
    for name in (f"pfsync_single_load_{kind}" for kind in _KINDS)
)
_NULLS = {kind: ", ".join(["NULL"] * (len(_PROBES[kind]) + 1)) for kind in _KINDS}
_EXPLAIN_LOOKUPS = " ".join(
    f"EXPLAIN (FORMAT JSON) EXECUTE pfsync_single_load_{kind}({_NULLS[kind]});" for kind in _KINDS
)


def _check_plans(conn: psycopg.Connection[Any], statements: str, prepared: _Prepared) -> None:
    """Send `statements` (PREPAREs), then read the lookups' kept plans (`EXPLAIN` of the generic plan, which makes
    it) and keep them for the kinds where every read goes through an index by a key (`keyed_plan`)."""
    with conn.cursor() as cur:
        cur.execute(f"{statements} SET plan_cache_mode = force_generic_plan; {_EXPLAIN_LOOKUPS} RESET plan_cache_mode")
        plans: list[Any] = []
        while cur.nextset():
            if cur.description is not None:
                plans.append(cur.fetchone())
    kept = frozenset(kind for kind, row in zip(_KINDS, plans, strict=True) if keyed_plan(row[0][0]["Plan"], kind))
    planned = sorted(set(_KINDS) - kept)
    if planned and (kept != prepared.kept_plan or prepared.checked_at == -math.inf):
        log.info("single-sync lookups of %s planned on every run: the kept plan reads by scope", ", ".join(planned))
    prepared.kept_plan = kept
    prepared.checked_at = time.monotonic()


def keyed_plan(plan: dict[str, Any], kind: str) -> bool:
    """Whether every read of `kind`'s table in an EXPLAIN (FORMAT JSON) plan is an index lookup by a key or an id,
    never one by the scope alone (`business_id = …`, which reads the whole business)."""
    if plan.get("Relation Name") == kind:
        if plan["Node Type"] not in ("Index Scan", "Index Only Scan"):
            return False
        # The condition on the scope taken out (its value may be in parentheses: `(InitPlan 1).col1`), a key's must
        # be left.
        keys = re.sub(rf"\({_SCOPE_COLUMN[kind]} = (?:[^()]|\([^()]*\))*\)", "", plan.get("Index Cond", ""))
        if " = " not in keys:
            return False
    return all(keyed_plan(child, kind) for child in plan.get("Plans", ()))


# Around the lookups by key: on the kept plan, or planned with their values on every run, in that transaction only.
_PLAN_MODE = {
    True: "SET LOCAL plan_cache_mode = force_generic_plan",
    False: "SET LOCAL plan_cache_mode = force_custom_plan",
}
_CACHED_PLANS = "SET LOCAL plan_cache_mode = DEFAULT"


def _execute(name: str, count: int) -> str:
    return f"EXECUTE {name}({', '.join(['%s'] * count)})"


class SingleStart(typing.NamedTuple):
    """What the first round trip of a single sync found."""

    seq: int
    key_live: bool
    business_found: bool
    # The rows the record names, as `load_rows` returns them plus what the API shows of them.
    rows: list[Row]


def start_single(
    conn: psycopg.Connection[Any], *, scope: Scope, payload: Payload | None, seq: int | None, key_id: str | None
) -> SingleStart:
    """BEGIN, the write sequence (`seq` when given), the key and business checks and, for a payload, the rows it
    names locked: one round trip. The connection must be in autocommit mode with no transaction open; the
    transaction stays open (`finish_single`, or `roll_back_single`)."""
    prepared = _prepare_single(conn)
    kind = scope.kind
    query = "BEGIN; " + _execute("pfsync_single_checks", 4)
    params: list[Any] = [seq, key_id, scope.business_id if kind == "customers" else None, scope.partner_id]
    if payload is not None:
        email = getattr(payload, "email_address", None)
        keys = [payload.id, payload.external_id] + ([email.lower() if email else None] if kind == "customers" else [])
        plan_mode = _PLAN_MODE[kind in prepared.kept_plan]
        query += f"; {plan_mode}; {_execute(f'pfsync_single_load_{kind}', 1 + len(keys))}; {_CACHED_PLANS}"
        params += [scope.partner_id if kind == "businesses" else scope.business_id, *keys]
    with psycopg.ClientCursor(conn) as cur:
        try:
            cur.execute(query, params)
        except pgerrors.InvalidSqlStatementName:
            # Deallocated since they were prepared: psycopg deallocates every statement prepared on a connection
            # when a transaction on it rolls back (the session path's included). Prepare them again.
            conn.rollback()
            _prepared.pop(conn, None)
            _prepare_single(conn)
            cur.execute(query, params)
        cur.nextset()
        checks = cur.fetchone()
        assert checks is not None
        rows: list[Row] = []
        if payload is not None:
            cur.nextset()
            cur.nextset()
            names = ("last_seq", *VIEW_COLUMNS[kind])
            for found in cur.fetchall():
                row = dict(zip(names, found, strict=True))
                row["metadata"] = orjson.loads(row["metadata"])
                rows.append(row)
    return SingleStart(int(checks[0]), bool(checks[1]), bool(checks[2]), rows)


def finish_single(conn: psycopg.Connection[Any], *, scope: Scope, seq: int, plan: Plan) -> tuple[Any, ...] | None:
    """Write a one-record plan and commit: one round trip. Returns the record as the API shows it (`VIEW_COLUMNS`,
    metadata parsed) when it was created or replaced; None when nothing of it changed.

    `Contended` (rolled back by the caller) when a concurrent writer created the record first."""
    kind = scope.kind
    writable = WRITABLE[kind]
    row: Row | None = None
    query, params = "", []
    if plan.creates:
        (row,) = plan.creates
        owner = [scope.partner_id] if kind == "businesses" else [scope.business_id, scope.partner_id]
        query = _execute(f"pfsync_single_insert_{kind}", 2 + len(owner) + len(writable)) + "; "
        params = [row["id"], *owner, *_written(row, writable), seq]
    elif plan.replaces:
        (row,) = plan.replaces
        query = _execute(f"pfsync_single_update_{kind}", 2 + len(writable)) + "; "
        params = [*_written(row, writable), seq, row["id"]]
    elif plan.touches:
        query, params = _execute(f"pfsync_single_touch_{kind}", 2) + "; ", [seq, plan.touches[0]]
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(query + "COMMIT", params)
        if row is None:
            return None
        stored = cur.fetchone()
    if stored is None:
        raise Contended("the insert was lost to a concurrent writer")
    return _view_row(kind, stored)


def _written(row: Row, columns: tuple[str, ...]) -> list[Any]:
    return [orjson.dumps(row[c]).decode() if c == "metadata" else row[c] for c in columns]


def roll_back_single(conn: psycopg.Connection[Any]) -> None:
    """End a single sync's transaction, whatever state it is in (nothing to do once it has committed)."""
    if not conn.closed:
        conn.rollback()
