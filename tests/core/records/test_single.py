"""One record synced in a transaction of its own (`core.records.service.sync_alone`, the single-sync routes' path):
the same rules as `sync_one`, its lookups by key whatever the statistics say, the contended retry ordered by the
sequence the first attempt took, and the connection given back as it was taken."""

from __future__ import annotations

import re
import threading
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.orm import Session

from core.db import autocommit_connection, database_url, session_scope
from core.errors import DomainError
from core.records import repository
from core.records.repository import _PLAN_MODE, _prepare_single, driver_connection
from core.records.rules import Scope
from core.records.schemas import parse_record
from core.records.service import sync_alone, sync_one
from tests.conftest import make_partner
from tests.core.records.test_repository import _business, _customers, _scans


def _sync(scope: Scope, body: dict[str, Any], key_id: str | None = None) -> tuple[str, dict[str, Any]]:
    payload = parse_record(scope.kind, body)
    assert not isinstance(payload, list)
    with autocommit_connection() as conn:
        outcome, view = sync_alone(conn, scope=scope, payload=payload, key_id=key_id)
    return outcome.outcome, view


def _new_business(name: str) -> tuple[Scope, str]:
    partner = make_partner(name)
    _, view = _sync(Scope("businesses", partner.partner_id), {"external_id": name, "name": name})
    return Scope("customers", partner.partner_id, view["id"]), partner.key_id


def _shown(view: dict[str, Any]) -> dict[str, Any]:
    """What two records synced alike in two businesses share."""
    return {k: v for k, v in view.items() if k not in ("id", "business_id", "created_at", "updated_at")}


def test_the_same_outcomes_and_records_as_sync_one() -> None:
    scope, _ = _new_business("alike")
    other, _ = _new_business("alike-too")
    steps: list[dict[str, Any]] = [
        {"external_id": "a", "email_address": "A@example.com", "metadata": {"n": 1}},
        {"external_id": "a", "email_address": "A@example.com", "metadata": {"n": 1}},
        {"external_id": "a", "full_name": "Ann"},
        {"external_id": "b", "email_address": "a@EXAMPLE.com"},
        {"external_id": "b", "email_address": "b@example.com", "phone_number": "+1 555"},
        {"external_id": "a", "email_address": "B@example.com"},
        {"external_id": "b", "email_address": "c@example.com"},
    ]
    for body in steps:
        try:
            got: tuple[str, dict[str, Any]] = _sync(scope, body)
        except DomainError as error:
            got = (error.code, {})
        with session_scope() as session:
            try:
                outcome, view = sync_one(session, scope=other, body=body)
                expected = (outcome.outcome, view)
            except DomainError as error:
                expected = (error.code, {})
        assert (got[0], _shown(got[1])) == (expected[0], _shown(expected[1])), body


def test_problems_come_in_the_routes_order() -> None:
    scope, key_id = _new_business("order")
    missing = Scope("customers", scope.partner_id, "biz_missing")
    invalid = DomainError("validation_error", "bad", 422)
    with autocommit_connection() as conn:
        with pytest.raises(DomainError) as raised:
            sync_alone(conn, scope=missing, payload=invalid, key_id=key_id)
        assert raised.value.code == "not_found"
        with pytest.raises(DomainError) as raised:
            sync_alone(conn, scope=scope, payload=invalid, key_id="key_revoked_or_unknown")
        assert raised.value.code == "unauthorized"
        with pytest.raises(DomainError) as raised:
            sync_alone(conn, scope=scope, payload=invalid, key_id=key_id)
        assert raised.value is invalid
        assert conn.info.transaction_status == 0  # each rolled back: nothing left open, no lock held


def test_concurrent_creates_of_one_record_end_with_the_last_accepted_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers racing to create the same record: one creates it, each other one retries and is ordered by the
    sequence it took first, so the stored record is the payload of the highest sequence."""
    scope, _ = _new_business("race")
    seqs: dict[str, int] = {}
    start_single = repository.start_single

    def recording(*args: Any, **kwargs: Any) -> repository.SingleStart:
        start = start_single(*args, **kwargs)
        seqs.setdefault(threading.current_thread().name, start.seq)
        return start

    monkeypatch.setattr(repository, "start_single", recording)
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(6)

    def writer() -> None:
        name = threading.current_thread().name
        barrier.wait()
        outcomes[name] = _sync(scope, {"external_id": "raced", "full_name": name})[0]

    threads = [threading.Thread(target=writer, name=f"writer-{n}") for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values()).count("created") == 1
    assert set(outcomes.values()) <= {"created", "replaced", "superseded"}
    last = max(seqs, key=seqs.__getitem__)
    _, view = _sync(scope, {"external_id": "raced", "full_name": last})
    assert _ == "unchanged"  # what the highest sequence wrote is what is stored
    assert view["full_name"] == last


def test_the_connection_goes_back_out_of_autocommit_and_idle() -> None:
    scope, _ = _new_business("pool")
    with autocommit_connection() as conn:
        with pytest.raises(DomainError):
            sync_alone(conn, scope=scope, payload=parse_record("customers", {"full_name": "x"}), key_id=None)  # type: ignore[arg-type]
    assert conn.autocommit is False
    assert conn.info.transaction_status == 0


def test_a_business_the_statistics_do_not_know_is_read_by_key_not_whole(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = make_partner("single-statistics")
    # The statistics know three businesses of 3000 customers, not the one that grew since: given its id, the
    # planner estimates it at a row and would look its keys up through the first column of any index.
    for name in ("known-1", "known-2", "known-3"):
        _customers(session, partner.partner_id, _business(session, partner.partner_id, name), 3000)
    grown = _business(session, partner.partner_id, "grown")
    driver_connection(session).execute("ANALYZE customers")
    _customers(session, partner.partner_id, grown, 3000)
    conn = driver_connection(session)
    monkeypatch.setattr(repository, "PLAN_CHECK_SECONDS", 0.0)  # its kept plan made afresh now
    prepared = _prepare_single(conn)
    assert "customers" in prepared.kept_plan  # the kept plan is a good one: the sync runs on it
    conn.execute(_PLAN_MODE[True])
    explained = psycopg.ClientCursor(conn).execute(
        "EXPLAIN (FORMAT JSON) EXECUTE pfsync_single_load_customers(%s, %s, %s, %s)",
        (grown, f"{grown}_cus_7", "c-1500", "c1600@example.com"),
    )
    row = explained.fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else orjson.loads(row[0])
    scans = [scan for scan in _scans(document[0]["Plan"]) if scan["Relation Name"] == "customers"]
    assert len(scans) == 4  # three probes, then the read (and lock) of each row found by its id
    for scan in scans:
        # Every read is an index lookup of one key (or of one id), never of the whole business by its id.
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan["Node Type"]
        condition = scan["Index Cond"]
        if not condition.startswith("(id = "):
            assert "Filter" not in scan, (condition, scan["Filter"])
            assert re.search(r"external_id|lower\(email_address\)|\bid = ", condition), condition


def test_the_lookups_run_on_the_kept_plan_once_it_reads_by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a table its statistics know as empty, the plan PostgreSQL would keep reads a whole business per key: the
    lookups are planned on every run instead, until a plan made afresh (a minute later) reads by key."""
    scope, _ = _new_business("kept-plan")
    url = database_url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA IF EXISTS kept_plan CASCADE")
        admin.execute("CREATE SCHEMA kept_plan")
        admin.execute("CREATE TABLE kept_plan.customers (LIKE public.customers INCLUDING ALL)")
        admin.execute("ANALYZE kept_plan.customers")
    try:
        # This connection's customers are that empty table; its businesses and keys are the real ones.
        with psycopg.connect(url, autocommit=True, options="-c search_path=kept_plan,public") as conn:
            payload = parse_record("customers", {"external_id": "c-7", "email_address": "c7@example.com"})
            assert not isinstance(payload, list)
            assert sync_alone(conn, scope=scope, payload=payload, key_id=None)[0].outcome == "created"
            assert "customers" not in repository._prepared[conn].kept_plan
            assert "businesses" in repository._prepared[conn].kept_plan

            conn.execute(
                "INSERT INTO customers (id, business_id, partner_id, external_id, email_address, last_seq) "
                "SELECT %(b)s || '_cus_' || g, %(b)s, %(p)s, 'c-' || g, 'c' || g || '@example.com', 0 "
                "FROM generate_series(8, 20000) AS g",
                {"b": scope.business_id, "p": scope.partner_id},
            )
            # Not due yet: the lookups are still planned on every run, and find the record.
            assert sync_alone(conn, scope=scope, payload=payload, key_id=None)[0].outcome == "unchanged"
            assert "customers" not in repository._prepared[conn].kept_plan
            monkeypatch.setattr(repository, "PLAN_CHECK_SECONDS", 0.0)
            changed = parse_record(
                "customers", {"external_id": "c-7", "email_address": "c7@example.com", "full_name": "Seven"}
            )
            assert not isinstance(changed, list)
            outcome, view = sync_alone(conn, scope=scope, payload=changed, key_id=None)
            assert (outcome.outcome, view["full_name"]) == ("replaced", "Seven")
            assert "customers" in repository._prepared[conn].kept_plan
            # A record whose keys two stored rows hold is found whole on the kept plan too.
            clash = parse_record("customers", {"external_id": "c-9", "email_address": "c10@example.com"})
            assert not isinstance(clash, list)
            with pytest.raises(DomainError) as raised:
                sync_alone(conn, scope=scope, payload=clash, key_id=None)
            assert raised.value.code == "email_address_taken"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DROP SCHEMA kept_plan CASCADE")


def test_statements_deallocated_since_they_were_prepared_are_prepared_again() -> None:
    """psycopg deallocates every statement prepared on a connection when a transaction on it rolls back."""
    scope, _ = _new_business("deallocated")
    payload = parse_record("customers", {"external_id": "again"})
    assert not isinstance(payload, list)
    with autocommit_connection() as conn:
        assert sync_alone(conn, scope=scope, payload=payload, key_id=None)[0].outcome == "created"
        conn.execute("DEALLOCATE ALL")
        assert sync_alone(conn, scope=scope, payload=payload, key_id=None)[0].outcome == "unchanged"


def test_the_business_cannot_be_deleted_while_a_sync_of_its_customer_is_in_flight() -> None:
    """Its business is locked by the sync's checks, as a customer's foreign key would: a deletion waits."""
    scope, key_id = _new_business("held")
    payload = parse_record("customers", {"external_id": "held"})
    assert not isinstance(payload, list)
    url = database_url().replace("postgresql+psycopg://", "postgresql://")
    with autocommit_connection() as conn, psycopg.connect(url) as other:
        start = repository.start_single(conn, scope=scope, payload=payload, seq=None, key_id=key_id)
        assert start.business_found
        other.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("DELETE FROM businesses WHERE id = %s", (scope.business_id,))
        other.rollback()
        repository.roll_back_single(conn)


@pytest.mark.parametrize(
    ("condition", "keyed"),
    [
        ("((business_id = $0) AND (external_id = $1))", True),
        ("(id = $1)", True),
        ("(business_id = $0)", False),
        # PostgreSQL 16 on names an initplan's value by the plan
        ("((business_id = (InitPlan 1).col1) AND (lower(email_address) = (InitPlan 2).col1))", True),
        ("(business_id = (InitPlan 1).col1)", False),
    ],
)
def test_a_plan_is_kept_only_when_each_read_is_by_a_key(condition: str, keyed: bool) -> None:
    scan = {"Node Type": "Index Scan", "Relation Name": "customers", "Index Cond": condition}
    read = {"Node Type": "Index Scan", "Relation Name": "customers", "Index Cond": "(id = customers.id)"}
    assert repository.keyed_plan({"Node Type": "Nested Loop", "Plans": [scan, read]}, "customers") is keyed
    assert not repository.keyed_plan({"Node Type": "Seq Scan", "Relation Name": "customers"}, "customers")
