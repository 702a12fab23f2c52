"""Loading the rows a chunk names: one index lookup per key, whatever the planner's statistics say."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy.orm import Session

from core.records.repository import _LOAD, _key_arrays, driver_connection, load_rows
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
        .execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%CROSS JOIN LATERAL%'")
        .fetchone()
    )
    assert prepared == (0,)
    _customers(session, partner.partner_id, business, 200)
    assert len(load_rows(cur, scope, records, lock=lock)) == 49
