"""Dry runs in the domain, on the real database (SPEC §9): a dry run of a batch and the real run of the same batch
right after it give every record the same outcome, the same changed fields and the same errors, and the dry run
leaves every stored record as it was (not even locked) and takes no write sequence.

Chunks are processed here one after the other, in order, in the test's own transaction (rolled back at the end),
through the same functions a worker calls; chunks of three records make every batch span several of them, so what
a record of one chunk sees of the records of the chunks before it is checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.config import settings as service_settings
from core.db import new_session
from core.errors import FieldError
from core.jobs.processing import count_attempt, process_chunk
from core.jobs.results import iter_results
from core.jobs.service import accept_batch
from core.partners.service import create_partner
from core.records.repository import apply_records
from core.records.rules import Payload, Scope
from core.records.schemas import parse_record
from core.records.service import next_write_seq

XIDS = ("x0", "x1", "x2", "x3", "x4")
EMAILS = ("ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com")
NAMES = ("Ann", "Bob", None)
METADATA: tuple[dict[str, Any], ...] = ({}, {"tier": "gold"}, {"tier": "gold", "visits": 3})
UNKNOWN_ID = "cus_00000000000000000000000000"
OMIT = object()
CHUNK = 3


@pytest.fixture
def rolled_back() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def _business(session: Session) -> Scope:
    partner_id = create_partner(session, name="dry runs").partner_id
    business = apply_records(
        session,
        scope=Scope("businesses", partner_id),
        seq=next_write_seq(session),
        records=[(0, parse_record("businesses", {"external_id": "shop", "name": "Shop"}))],
    )[0]
    assert business.id is not None
    return Scope("customers", partner_id, business.id)


def _seed(session: Session, scope: Scope, customers: list[dict[str, Any]]) -> list[str]:
    """Store customers through the real path; their ids, in order."""
    records: list[tuple[int, Payload | list[FieldError]]] = [
        (i, parse_record("customers", body)) for i, body in enumerate(customers)
    ]
    outcomes = apply_records(session, scope=scope, seq=next_write_seq(session), records=records)
    assert [o.outcome for o in outcomes] == ["created"] * len(customers), [o.errors for o in outcomes]
    return [o.id for o in outcomes if o.id is not None]


def run_job(session: Session, scope: Scope, elements: list[Any], *, dry_run: bool) -> tuple[Any, list[dict[str, Any]]]:
    """Accept a batch and process its chunks in order, as the workers would; the job and its results."""
    accepted = accept_batch(
        session,
        partner_id=scope.partner_id,
        kind="customers",
        business_id=scope.business_id,
        elements=elements,
        dry_run=dry_run,
    )
    job_id = accepted.job.id
    numbers = session.execute(
        text("SELECT chunk_no FROM job_chunks WHERE job_id = :j ORDER BY chunk_no"), {"j": job_id}
    ).scalars()
    for chunk_no in list(numbers):

        def claim(number: int = chunk_no) -> int | None:
            return count_attempt(session, job_id=job_id, chunk_no=number)

        # A dry run's next chunk is released only once the one before it is done: claiming it earlier finds
        # nothing to do, and this would fail.
        assert process_chunk(session, job_id=job_id, chunk_no=chunk_no, claim=claim) is not None
    session.refresh(accepted.job)
    return accepted.job, list(iter_results(session, job_id))


def stored_state(session: Session, scope: Scope) -> list[tuple[Any, ...]]:
    """Every customer of the business as stored, with the row version and lock marks PostgreSQL keeps for it: any
    write, and any row lock, changes `xmin`, `xmax` or `ctid`."""
    return list(
        session.execute(
            text(
                "SELECT id, external_id, email_address, phone_number, full_name, metadata::text, unsubscribed, "
                "created_at, updated_at, last_seq, xmin::text, xmax::text, ctid::text "
                "FROM customers WHERE business_id = :b ORDER BY id"
            ),
            {"b": scope.business_id},
        ).all()
    )


def write_seq(session: Session) -> int:
    return int(session.execute(text("SELECT last_value FROM write_seq")).scalar_one())


# --- random stored customers, and random batches against them --------------------------------------------------

stored_customers = st.integers(min_value=0, max_value=4).flatmap(
    lambda n: st.tuples(
        st.permutations(XIDS).map(lambda xids: xids[:n]),
        st.permutations((*EMAILS, None, None, None, None)).map(lambda emails: emails[:n]),
        st.lists(st.sampled_from(NAMES), min_size=n, max_size=n),
        st.lists(st.sampled_from(METADATA), min_size=n, max_size=n),
    )
)


def _field(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    return draw(st.one_of(st.just(OMIT), values))


@st.composite
def batch_record(draw: st.DrawFn, customers: list[dict[str, Any]]) -> Any:
    """A record that names stored customers by id or external_id, or new ones, with valid and invalid values; or a
    stored customer sent back as it is."""
    stored = len(customers)
    if draw(st.integers(0, 24)) == 0:
        return 42  # not an object
    if stored and draw(st.integers(0, 4)) == 0:
        index = draw(st.integers(0, stored - 1))
        resent = dict(customers[index])
        if draw(st.booleans()):
            resent["id"] = f"#{index}"
        return resent
    record: dict[str, Any] = {}
    ids = st.sampled_from([*(f"#{i}" for i in range(stored)), UNKNOWN_ID])
    choices: dict[str, st.SearchStrategy[Any]] = {
        "id": ids,
        "external_id": st.sampled_from((*XIDS, "new-1", "new-2", None)),
        "email_address": st.one_of(
            st.sampled_from((*EMAILS, None, "not an address")),
            st.sampled_from(EMAILS).map(str.upper),  # the same address, another case
        ),
        "full_name": st.sampled_from(NAMES),
        "metadata": st.sampled_from(METADATA),
    }
    for name, values in choices.items():
        value = _field(draw, values)
        if value is not OMIT:
            record[name] = value
    if draw(st.integers(0, 19)) == 0:
        record["colour"] = "red"  # unknown_field
    return record


def _named(element: Any, ids: list[str]) -> Any:
    """The record with `#n` placeholders replaced by the n-th stored customer's id."""
    if isinstance(element, dict) and str(element.get("id", "")).startswith("#"):
        return {**element, "id": ids[int(element["id"][1:])]}
    return element


def _comparable(result: dict[str, Any]) -> tuple[Any, ...]:
    created = result["outcome"] == "created"
    return (
        result["index"],
        result["outcome"],
        None if created else result["id"],
        result["external_id"],
        result["changed_fields"],
        result["errors"],
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(stored=stored_customers, data=st.data())
def test_a_dry_run_says_exactly_what_the_real_run_after_it_does(
    stored: tuple[tuple[str, ...], tuple[str | None, ...], list[str | None], list[dict[str, Any]]],
    data: st.DataObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_settings, "chunk_size", CHUNK)
    xids, emails, names, metadata = stored
    session = new_session()
    try:
        scope = _business(session)
        customers = [
            {"external_id": x, "email_address": e, "full_name": n, "metadata": m}
            for x, e, n, m in zip(xids, emails, names, metadata, strict=True)
        ]
        ids = _seed(session, scope, customers)
        elements = [_named(e, ids) for e in data.draw(st.lists(batch_record(customers), min_size=1, max_size=12))]
        before = stored_state(session, scope)
        seq_before = write_seq(session)

        dry_job, dry = run_job(session, scope, elements, dry_run=True)

        assert stored_state(session, scope) == before  # nothing written, nothing locked
        assert write_seq(session) == seq_before  # no write sequence taken
        assert (dry_job.dry_run, dry_job.seq, dry_job.status) == (True, None, "completed")
        leftovers = session.execute(text("SELECT count(*) FROM dry_run_rows WHERE job_id = :j"), {"j": dry_job.id})
        assert leftovers.scalar_one() == 0
        real_job, real = run_job(session, scope, elements, dry_run=False)

        assert [_comparable(r) for r in dry] == [_comparable(r) for r in real]
        for would, did in zip(dry, real, strict=True):
            event(would["outcome"])
            for error in would["errors"]:
                event(error["code"])
            if would["outcome"] == "created":
                assert would["id"] is None  # a would-be created record has no id yet
                assert did["id"] is not None
            assert ("changes" in would) == (would["outcome"] == "replaced")
            assert "changes" not in did
            if would["outcome"] == "replaced":
                assert list(would["changes"]) == would["changed_fields"]
        counts = ("created", "replaced", "unchanged", "superseded", "failed")
        assert [getattr(dry_job, c) for c in counts] == [getattr(real_job, c) for c in counts]
        # What the dry run said each replaced record would become is what the real run made of it (the last
        # record of the batch naming it decides its final state).
        final: dict[str, dict[str, Any]] = {}
        for would in dry:
            if would["outcome"] == "replaced":
                final.setdefault(would["id"], {}).update({f: c["to"] for f, c in would["changes"].items()})
        columns = "id, external_id, email_address, phone_number, full_name, metadata"
        rows = session.execute(
            text(f"SELECT {columns} FROM customers WHERE business_id = :b"), {"b": scope.business_id}
        ).mappings()
        by_id = {row["id"]: dict(row) for row in rows}
        for record_id, fields in final.items():
            assert {f: by_id[record_id][f] for f in fields} == fields
    finally:
        session.rollback()
        session.close()


# --- what each chunk sees of the chunks before it ----------------------------------------------------------------


def test_each_chunk_of_a_dry_run_sees_what_the_chunks_before_it_would_do(
    rolled_back: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_settings, "chunk_size", 2)
    session = rolled_back
    scope = _business(session)
    a, b, c = _seed(
        session,
        scope,
        [
            {"external_id": "a", "email_address": "a@example.com", "full_name": "A"},
            {"external_id": "b", "email_address": "b@example.com", "full_name": "B"},
            {"external_id": "c", "full_name": "C"},
        ],
    )
    elements = [
        # chunk 0
        {"id": a, "external_id": "a2", "email_address": "a@example.com", "full_name": "A"},  # gives up "a"
        {"external_id": "b", "email_address": "b2@example.com", "full_name": "B"},  # gives up b@example.com
        # chunk 1
        {"external_id": "a", "full_name": "New A"},  # "a" is free by then: a new customer
        {"external_id": "c", "full_name": "C2"},
        # chunk 2
        {"external_id": "n", "email_address": "b@example.com"},  # b@example.com is free by then too
        {"id": c, "full_name": "C2"},  # as record 3 left it: unchanged
    ]
    before = stored_state(session, scope)

    job, results = run_job(session, scope, elements, dry_run=True)

    assert [(r["outcome"], r["id"], r["changed_fields"]) for r in results] == [
        ("replaced", a, ["external_id"]),
        ("replaced", b, ["email_address"]),
        ("created", None, []),
        ("replaced", c, ["full_name"]),
        ("created", None, []),
        ("unchanged", c, []),
    ]
    assert results[1]["changes"] == {"email_address": {"from": "b@example.com", "to": "b2@example.com"}}
    assert (job.created, job.replaced, job.unchanged, job.failed) == (2, 3, 1, 0)
    assert stored_state(session, scope) == before

    _, real = run_job(session, scope, elements, dry_run=False)
    assert [_comparable(r) for r in real] == [_comparable(r) for r in results]


def test_a_dry_run_of_a_record_the_database_holds_locked_does_not_wait(rolled_back: Session) -> None:
    """A real write holding a customer's row (another transaction, open) does not hold up a dry run of it."""
    session = rolled_back
    scope = _business(session)
    [held] = _seed(session, scope, [{"external_id": "held", "full_name": "Held"}])
    session.commit()  # the other transaction must see the row
    other = new_session()
    try:
        other.execute(text("SELECT 1 FROM customers WHERE id = :i FOR UPDATE"), {"i": held})
        session.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail the test, not hang it
        _, results = run_job(session, scope, [{"external_id": "held", "full_name": "Changed"}], dry_run=True)
        assert [(r["outcome"], r["id"], r["changed_fields"]) for r in results] == [("replaced", held, ["full_name"])]
    finally:
        other.rollback()
        other.close()
        session.rollback()
        with session.begin():
            session.execute(text("DELETE FROM partners WHERE id = :p"), {"p": scope.partner_id})


# --- what a dry run carries from one chunk to the next --------------------------------------------------------------


def _carried_after_first_chunk(session: Session, scope: Scope, elements: list[Any]) -> set[str]:
    """Accept a dry run, process its first chunk; the ids of the would-be rows it carries to the next."""
    job = accept_batch(
        session,
        partner_id=scope.partner_id,
        kind="customers",
        business_id=scope.business_id,
        elements=elements,
        dry_run=True,
    ).job
    claim = lambda: count_attempt(session, job_id=job.id, chunk_no=0)  # noqa: E731
    assert process_chunk(session, job_id=job.id, chunk_no=0, claim=claim) is not None
    rows = session.execute(text("SELECT row_id FROM dry_run_rows WHERE job_id = :j"), {"j": job.id}).scalars()
    return set(rows)


def test_a_dry_run_carries_only_the_rows_a_later_record_can_still_name(
    rolled_back: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_settings, "chunk_size", 2)
    session = rolled_back
    scope = _business(session)
    a, b, c = _seed(
        session,
        scope,
        [
            {"external_id": "a", "email_address": "a@example.com"},
            {"external_id": "b", "email_address": "b@example.com"},
            {"external_id": "c"},
        ],
    )
    # By external_id, keeping the email address: no later record can name these rows (it would repeat a key).
    same_keys = [
        {"external_id": "a", "email_address": "a@example.com", "full_name": "A"},
        {"external_id": "b", "email_address": "b@example.com", "full_name": "B"},
        {"external_id": "n"},
    ]
    assert _carried_after_first_chunk(session, scope, same_keys) == set()
    # Giving up an email address (b@example.com) leaves it to later records; and once a record of the batch names
    # one by id, any row may be named by id later (c is named by id in the batch).
    freed = [
        {"external_id": "a", "email_address": "a@example.com", "full_name": "A"},
        {"external_id": "b", "email_address": "b2@example.com"},
        {"external_id": "n"},
    ]
    assert _carried_after_first_chunk(session, scope, freed) == {b}
    by_id = [*same_keys[:2], {"id": c, "full_name": "C"}]
    assert _carried_after_first_chunk(session, scope, by_id) == {a, b}
