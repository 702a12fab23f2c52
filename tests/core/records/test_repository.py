"""Loading the rows a chunk names: one index lookup per key, whatever the planner's statistics say."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.orm import Session

from core.db import new_session
from core.errors import DomainError
from core.records.repository import _LOAD, _key_arrays, apply_records, driver_connection, load_rows, next_write_seq
from core.records.rules import Scope
from core.records.schemas import parse_record
from tests.conftest import make_partner


def _business(session: Session, partner_id: str, name: str) -> str:
    business_id = f"biz_test_{name}_{partner_id[-8:]}"
    driver_connection(session).execute(
        "INSERT INTO businesses (id, partner_id, external_id, name) VALUES (%s, %s, %s, %s)",
        (business_id, partner_id, name, name),
    )
    return business_id


def _customers(session: Session, partner_id: str, business_id: str, count: int) -> None:
    driver_connection(session).execute(
        "INSERT INTO customers (id, business_id, partner_id, external_id, email_address) "
        "SELECT %(b)s || '_cus_' || g, %(b)s, %(p)s, 'c-' || g, 'c' || g || '@example.com' "
        "FROM generate_series(1, %(n)s) AS g",
        {"b": business_id, "p": partner_id, "n": count},
    )


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


# The real path locks the rows it reads; a dry run reads the same ones the same way, without a lock.
@pytest.mark.parametrize("lock", [True, False], ids=["locked", "dry_run"])
def test_a_business_the_statistics_do_not_know_is_read_by_key_not_whole(session: Session, lock: bool) -> None:
    partner = make_partner("statistics")
    known = _business(session, partner.partner_id, "known")
    grown = _business(session, partner.partner_id, "grown")
    _customers(session, partner.partner_id, known, 3000)
    # The statistics see one business holding every customer: any other one is estimated at a single row, so a
    # lookup by `business_id = <it>` alone looks cheaper than 1000 lookups by key.
    driver_connection(session).execute("ANALYZE customers")
    _customers(session, partner.partner_id, grown, 3000)

    keys = [f"c-{i}" for i in range(1000, 2000)]
    emails = [f"c{i}@example.com" for i in range(1500, 2500)]
    params = {"scope": grown, **_key_arrays(ids=[f"{grown}_cus_7"], xids=keys, emails=emails)}
    explained = (
        driver_connection(session).execute("EXPLAIN (FORMAT JSON) " + _LOAD["customers", lock], params).fetchone()
    )
    assert explained is not None
    document = explained[0] if isinstance(explained[0], list) else orjson.loads(explained[0])
    scans = [scan for scan in _scans(document[0]["Plan"]) if scan["Relation Name"] == "customers"]

    assert scans
    for scan in scans:
        # Every read of customers is an index lookup of one key (or of one id), never of the whole business.
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan["Node Type"]
        condition = scan["Index Cond"]
        assert re.search(r"\bk(_\d+)?\.v\b", condition) or condition.startswith("(id = "), condition
        # A lookup by primary key finds one row whatever the scope; only then may the scope be checked as a filter
        # (PostgreSQL 16 prefers the primary key for the `id` probe where 15 takes the (business_id, id) index).
        if not re.match(r"\(id = ", condition):
            assert "Filter" not in scan, scan["Filter"]

    rows = load_rows(
        driver_connection(session).cursor(),
        Scope("customers", partner.partner_id, grown),
        [(i, parse_record("customers", {"external_id": key})) for i, key in enumerate(keys)],
        lock=lock,
    )
    assert sorted(row["external_id"] for row in rows) == sorted(keys)
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)  # (locked) in id order


@pytest.mark.parametrize("lock", [True, False], ids=["locked", "dry_run"])
def test_a_connection_keeps_no_plan_made_while_the_table_was_small(session: Session, lock: bool) -> None:
    """A prepared statement keeps one generic plan for the connection's life. Made on an empty business (a worker's
    first chunks on a new database), it reads the whole business for each key once the business has grown, so the
    load must be planned afresh each time, never prepared."""
    partner = make_partner("plans")
    business = _business(session, partner.partner_id, "small-then-big")
    cur = driver_connection(session).cursor()
    scope = Scope("customers", partner.partner_id, business)
    records = [(i, parse_record("customers", {"external_id": f"c-{i}"})) for i in range(1, 50)]
    for _ in range(8):  # psycopg prepares a statement from its fifth run on
        assert load_rows(cur, scope, records, lock=lock) == []
    prepared = (
        driver_connection(session)
        .execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%CROSS JOIN LATERAL%' "
            "AND name NOT LIKE 'pfsync%'"
        )
        .fetchone()
    )
    assert prepared == (0,)
    _customers(session, partner.partner_id, business, 200)
    assert len(load_rows(cur, scope, records, lock=lock)) == 49


# --- a customer's business, without a foreign key checked row by row (migration 0007) ------------------------------


def _sync(session: Session, scope: Scope, records: list[dict[str, Any]]) -> list[str]:
    payloads = [(i, parse_record("customers", r)) for i, r in enumerate(records)]
    outcomes = apply_records(session, scope=scope, seq=next_write_seq(session), records=payloads)
    return [o.outcome for o in outcomes]


def test_customers_go_with_their_business_and_with_its_partner(session: Session) -> None:
    partner = make_partner("cascade")
    kept = _business(session, partner.partner_id, "kept")
    dropped = _business(session, partner.partner_id, "dropped")
    for business in (kept, dropped):
        scope = Scope("customers", partner.partner_id, business)
        assert _sync(session, scope, [{"external_id": f"c-{i}"} for i in range(3)]) == ["created"] * 3
    conn = driver_connection(session)
    conn.execute("DELETE FROM businesses WHERE id = %s", (dropped,))
    owners = conn.execute(
        "SELECT business_id, count(*) FROM customers WHERE partner_id = %s GROUP BY 1", (partner.partner_id,)
    )
    assert owners.fetchall() == [(kept, 3)]
    conn.execute("DELETE FROM partners WHERE id = %s", (partner.partner_id,))
    left = conn.execute("SELECT count(*) FROM customers WHERE partner_id = %s", (partner.partner_id,)).fetchone()
    assert left == (0,)


def test_no_customer_is_written_into_a_business_that_is_gone(session: Session) -> None:
    partner = make_partner("orphans")
    business = _business(session, partner.partner_id, "gone")
    driver_connection(session).execute("DELETE FROM businesses WHERE id = %s", (business,))
    scope = Scope("customers", partner.partner_id, business)
    with pytest.raises(DomainError) as raised:
        _sync(session, scope, [{"external_id": "c-1"}, {"external_id": "c-2"}])
    assert raised.value.code == "not_found"
    stored = driver_connection(session).execute("SELECT count(*) FROM customers WHERE business_id = %s", (business,))
    assert stored.fetchone() == (0,)


def test_a_business_cannot_be_deleted_under_a_write_of_its_customers(session: Session) -> None:
    """The write locks its business as a foreign key's check would: a deletion waits for it, then takes the
    customers it wrote along, so no customer is ever left without its business."""
    partner = make_partner("race")
    business = _business(session, partner.partner_id, "raced")
    session.commit()
    scope = Scope("customers", partner.partner_id, business)
    assert _sync(session, scope, [{"external_id": "c-1"}]) == ["created"]  # open: the business is locked
    other = new_session()
    try:
        conn = driver_connection(other)
        conn.execute("SET LOCAL lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("DELETE FROM businesses WHERE id = %s", (business,))
        other.rollback()
        session.commit()
        conn = driver_connection(other)
        conn.execute("DELETE FROM businesses WHERE id = %s", (business,))
        other.commit()
        left = driver_connection(other).execute("SELECT count(*) FROM customers WHERE business_id = %s", (business,))
        assert left.fetchone() == (0,)
    finally:
        other.rollback()
        other.close()
        with session.begin():
            driver_connection(session).execute("DELETE FROM partners WHERE id = %s", (partner.partner_id,))


def test_a_key_taken_by_a_concurrent_writer_is_planned_again_not_lost(session: Session) -> None:
    """Another transaction inserts the same external_id after this sync read the rows, and commits while this
    sync's insert waits on it: the insert fails on the unique key, is planned again and replaces that row."""
    partner = make_partner("concurrent")
    business = _business(session, partner.partner_id, "contended")
    session.commit()
    scope = Scope("customers", partner.partner_id, business)
    other = new_session()
    try:
        driver_connection(other).execute(
            "INSERT INTO customers (id, business_id, partner_id, external_id, full_name) VALUES (%s, %s, %s, %s, %s)",
            ("cus_theirs", business, partner.partner_id, "same", "Theirs"),
        )
        with ThreadPoolExecutor(1) as pool:
            mine = pool.submit(_sync, session, scope, [{"external_id": "same", "full_name": "Mine"}])
            time.sleep(0.3)  # the insert now waits for the other transaction's key
            assert not mine.done()
            other.commit()
            assert mine.result(timeout=10) == ["replaced"]
        session.commit()
        stored = driver_connection(session).execute(
            "SELECT id, full_name FROM customers WHERE business_id = %s", (business,)
        )
        assert stored.fetchall() == [("cus_theirs", "Mine")]
    finally:
        other.rollback()
        other.close()
        session.rollback()
        with session.begin():
            driver_connection(session).execute("DELETE FROM partners WHERE id = %s", (partner.partner_id,))


def test_the_services_statements_are_never_compiled_by_jit(session: Session) -> None:
    """JIT compilation slows a chunk's row load, whose cost the planner overestimates on a table without
    statistics, by up to half again: the service's connections run without it, whatever the server's setting."""
    partner = make_partner("jit")
    business = _business(session, partner.partner_id, "jit")
    conn = driver_connection(session)
    conn.execute("SET LOCAL jit_above_cost = 0")  # were JIT on, it would compile this statement
    keys = [f"c-{i}" for i in range(100)]
    params = {"scope": business, **_key_arrays(ids=[], xids=keys, emails=keys)}
    explained = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _LOAD["customers", True], params).fetchone()
    assert explained is not None
    assert "JIT" not in explained[0][0]


@pytest.mark.parametrize("lock", [True, False], ids=["locked", "dry_run"])
def test_an_email_held_by_another_customer_than_the_one_named_is_still_found(session: Session, lock: bool) -> None:
    """An email address is not looked up again when the customer named by id or external_id holds it; held by
    another customer, that one is loaded too (the rules then find the conflict)."""
    partner = make_partner("emails")
    business = _business(session, partner.partner_id, "emails")
    _customers(session, partner.partner_id, business, 3)  # c-1 holds c1@example.com, c-2 holds c2@example.com
    scope = Scope("customers", partner.partner_id, business)
    cur = driver_connection(session).cursor()

    def loaded(record: dict[str, Any]) -> list[str]:
        rows = load_rows(cur, scope, [(0, parse_record("customers", record))], lock=lock)
        return [row["external_id"] for row in rows]

    assert loaded({"external_id": "c-1", "email_address": "C1@example.com"}) == ["c-1"]
    assert sorted(loaded({"external_id": "c-1", "email_address": "c2@example.com"})) == ["c-1", "c-2"]
    assert sorted(loaded({"id": f"{business}_cus_3", "email_address": "c2@example.com"})) == ["c-2", "c-3"]
    assert loaded({"external_id": "new", "email_address": "c3@example.com"}) == ["c-3"]


# --- records assumed new (a job none of whose records so far found a stored one) ----------------------------------


def _index_scans(session: Session, index: str) -> int:
    """Scans of an index in the session's transaction so far."""
    found = driver_connection(session).execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", (index,)).fetchone()
    assert found is not None
    return int(found[0])


def _apply(session: Session, scope: Scope, records: list[dict[str, Any]], *, assume_new: bool) -> list[Any]:
    payloads = [(i, parse_record("customers", r)) for i, r in enumerate(records)]
    seq = next_write_seq(session)
    outcomes = apply_records(session, scope=scope, seq=seq, records=payloads, assume_new=assume_new)
    return [(o.outcome, [e.code for e in o.errors]) for o in outcomes]


def test_records_assumed_new_are_created_without_a_lookup(session: Session) -> None:
    partner = make_partner("assumed-new")
    scope = Scope("customers", partner.partner_id, _business(session, partner.partner_id, "assumed-new"))
    before = _index_scans(session, "uq_customers_business_external_id")
    records = [{"external_id": f"n-{i}", "email_address": f"n{i}@example.com"} for i in range(50)]
    assert _apply(session, scope, records, assume_new=True) == [("created", [])] * 50
    assert _index_scans(session, "uq_customers_business_external_id") == before  # no key was looked up
    # Not assumed new, the same kind of records are looked up first.
    more = [{"external_id": f"m-{i}"} for i in range(5)]
    assert _apply(session, scope, more, assume_new=False) == [("created", [])] * 5
    assert _index_scans(session, "uq_customers_business_external_id") > before


def test_records_assumed_new_that_are_not_get_the_same_outcomes(session: Session) -> None:
    """One stored key among them fails the INSERT that assumed none: they are planned over the rows they name,
    with every outcome as if nothing had been assumed, and nothing of the first try is left."""
    partner = make_partner("not-new")
    scopes = [
        Scope("customers", partner.partner_id, _business(session, partner.partner_id, f"not-new-{n}")) for n in (1, 2)
    ]
    stored = [
        {"external_id": "kept", "email_address": "kept@example.com"},
        {"external_id": "mail", "email_address": "taken@example.com"},
    ]
    records = [
        {"external_id": "fresh-1", "email_address": "fresh1@example.com"},
        {"external_id": "kept", "email_address": "kept@example.com", "full_name": "Kept"},
        {"external_id": "fresh-2", "email_address": "TAKEN@example.com"},
        {"external_id": "fresh-3"},
        {"full_name": "nobody"},
    ]
    results = []
    for scope, assume_new in zip(scopes, (True, False), strict=True):
        assert _apply(session, scope, stored, assume_new=False) == [("created", [])] * 2
        results.append(_apply(session, scope, records, assume_new=assume_new))
    assert (
        results[0]
        == results[1]
        == [
            ("created", []),
            ("replaced", []),
            ("failed", ["email_address_taken"]),
            ("created", []),
            ("failed", ["missing_identifier"]),
        ]
    )
    for scope in scopes:
        rows = driver_connection(session).execute(
            "SELECT external_id, full_name FROM customers WHERE business_id = %s ORDER BY external_id",
            (scope.business_id,),
        )
        assert rows.fetchall() == [("fresh-1", None), ("fresh-3", None), ("kept", "Kept"), ("mail", None)]


def test_a_record_named_by_id_is_looked_up_even_if_records_are_assumed_new(session: Session) -> None:
    partner = make_partner("by-id")
    scope = Scope("customers", partner.partner_id, _business(session, partner.partner_id, "by-id"))
    payloads = [(0, parse_record("customers", {"external_id": "one"}))]
    (created,) = apply_records(session, scope=scope, seq=next_write_seq(session), records=payloads)
    assert created.id is not None
    named = [{"id": created.id, "external_id": "one", "full_name": "One"}, {"external_id": "two"}]
    assert _apply(session, scope, named, assume_new=True) == [("replaced", []), ("created", [])]
