"""The sync rules of SPEC §3.

A hypothesis state machine drives random sequences of single syncs (through `core.records.service.sync_one`, on the
real database) and checks each answer and the stored state against a small model of the rules written from the
spec. Unit tests of `core.records.rules.plan_records` pin the in-list ordering of key moves, and one test writes such a
chain of moves through the real SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import text

from core.db import new_session, session_scope
from core.errors import DomainError, FieldError
from core.partners.service import create_partner
from core.records.repository import apply_records
from core.records.rules import Payload, Scope, plan_records
from core.records.schemas import BusinessPayload, parse_record
from core.records.service import customer_view, get_customer, next_write_seq, sync_one

OMIT = "<omitted>"
# External ids are compared exactly, email addresses case-insensitively: each pool has one value in two spellings.
XIDS = ("x1", "X1", "x2")
EMAILS = ("ann@example.com", "ANN@Example.com", "bob@example.com", "Bob@EXAMPLE.com")
PHONES = (OMIT, "+1 555 0100", "(555) 0199")
NAMES = (OMIT, "Ann", "Bob")
METADATA: tuple[Any, ...] = (OMIT, None, {}, {"tier": "gold"}, {"tier": "gold", "visits": 3})
PROPS = ("external_id", "email_address", "phone_number", "full_name", "metadata")
UNKNOWN_ID = "cus_00000000000000000000000000"


@dataclass
class Stored:
    """A customer as the model holds it."""

    external_id: str | None
    email_address: str | None
    phone_number: str | None
    full_name: str | None
    metadata: dict[str, Any]
    unsubscribed: str | None = None
    frozen: bool = False  # its last write is newer than any write to come (rule 7)

    def props(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in PROPS}


@dataclass
class Expected:
    """What the model says one sync does."""

    outcome: str | None = None  # created / replaced / unchanged / superseded
    error: str | None = None
    status: int | None = None
    target: str | None = None
    state: Stored | None = None


@dataclass
class Model:
    records: dict[str, Stored] = field(default_factory=dict)

    def holder(self, prop: str, value: str) -> str | None:
        """The record holding `value` (an email address in any case)."""
        fold = str.lower if prop == "email_address" else str
        for record_id, record in self.records.items():
            held = getattr(record, prop)
            if held is not None and fold(held) == fold(value):
                return record_id
        return None

    def expect(self, payload: dict[str, Any]) -> Expected:
        """Rules 1–7 of SPEC §3 for one record, read straight from the spec."""
        target: str | None
        if "id" in payload:
            target = payload["id"]
            if target not in self.records:
                return Expected(error="not_found", status=404)
        elif payload.get("external_id") is not None:
            target = self.holder("external_id", payload["external_id"])
        else:
            return Expected(error="missing_identifier", status=422)
        current = self.records.get(target) if target is not None else None
        if current is not None and current.frozen:
            return Expected(outcome="superseded", target=target, state=current)
        xid = payload["external_id"] if "external_id" in payload else (current.external_id if current else None)
        state = Stored(
            external_id=xid,
            email_address=payload.get("email_address"),
            phone_number=payload.get("phone_number"),
            full_name=payload.get("full_name"),
            metadata=payload.get("metadata") or {},
            unsubscribed=current.unsubscribed if current else None,
        )
        if xid is not None and self.holder("external_id", xid) not in (None, target):
            return Expected(error="external_id_conflict", status=409)
        email = state.email_address
        if email is not None and self.holder("email_address", email) not in (None, target):
            return Expected(error="email_address_taken", status=409)
        if current is None:
            return Expected(outcome="created", state=state)
        outcome = "unchanged" if state.props() == current.props() else "replaced"
        return Expected(outcome=outcome, target=target, state=state)


def _stored_rows(business_id: str) -> dict[str, dict[str, Any]]:
    with session_scope() as session:
        rows = session.execute(
            text(
                "SELECT id, external_id, email_address, phone_number, full_name, metadata, unsubscribed, updated_at "
                "FROM customers WHERE business_id = :b"
            ),
            {"b": business_id},
        ).mappings()
        return {row["id"]: dict(row) for row in rows}


class SyncRules(RuleBasedStateMachine):
    """Random single syncs of one business's customers, checked against `Model` after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        with session_scope() as session:
            partner_id = create_partner(session, name="model partner").partner_id
            home = sync_one(session, scope=Scope("businesses", partner_id), body={"external_id": "home", "name": "H"})
            away = sync_one(session, scope=Scope("businesses", partner_id), body={"external_id": "away", "name": "A"})
            self.home_id = home[1]["id"]
            self.scope = Scope("customers", partner_id, self.home_id)
            self.away_id = away[1]["id"]
            # A customer of the partner's other business: its id is not in this business's scope.
            foreign = sync_one(
                session,
                scope=Scope("customers", partner_id, self.away_id),
                body={"external_id": "x1", "email_address": "ann@example.com"},
            )
            self.foreign = foreign[1]
        self.last_payload: dict[str, Any] | None = None

    def _pick_id(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.model.records)))

    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        payload: dict[str, Any] = {}
        how = data.draw(st.sampled_from(["no id", "no id", "own id", "own id", "unknown id", "foreign id"]))
        if how == "own id" and self.model.records:
            payload["id"] = self._pick_id(data)
        elif how == "unknown id":
            payload["id"] = UNKNOWN_ID
        elif how == "foreign id":
            payload["id"] = self.foreign["id"]
        for prop, choices in (
            ("external_id", (OMIT, None, *XIDS)),
            ("email_address", (OMIT, None, *EMAILS)),
            ("phone_number", PHONES),
            ("full_name", NAMES),
            ("metadata", METADATA),
        ):
            value = data.draw(st.sampled_from(choices), label=prop)
            if value != OMIT:
                payload[prop] = value
        self.last_payload = payload
        self._check_sync(payload)

    @rule()
    def sync_the_same_payload_again(self) -> None:
        if self.last_payload is not None:
            self._check_sync(self.last_payload)

    @rule(data=st.data())
    def send_back_what_was_read(self, data: st.DataObject) -> None:
        """A customer as the API shows it, sent back as is: read-only fields are accepted and ignored."""
        if not self.model.records:
            return
        session = new_session()
        try:
            customer = get_customer(session, partner_id=self.scope.partner_id, customer_id=self._pick_id(data))
            view = customer_view(customer)
        finally:
            session.close()
        if data.draw(st.booleans(), label="claims another business"):
            view["business_id"] = self.away_id
        self._check_sync(view)

    @rule(data=st.data())
    def change_outside_sync(self, data: st.DataObject) -> None:
        """A newer accepted write reaches a record (every later sync of it is superseded), or it unsubscribes."""
        if not self.model.records:
            return
        record_id = self._pick_id(data)
        record = self.model.records[record_id]
        if data.draw(st.booleans(), label="newer write"):
            change, record.frozen = "last_seq = 9e15", True
        else:
            change, record.unsubscribed = "unsubscribed = 'campaign'", "campaign"
        with session_scope() as session:
            session.execute(text(f"UPDATE customers SET {change} WHERE id = :id"), {"id": record_id})

    def _check_sync(self, payload: dict[str, Any]) -> None:
        expected = self.model.expect(payload)
        event(expected.outcome or expected.error or "")
        before = _stored_rows(self.home_id)
        session = new_session()
        failure: DomainError | None = None
        try:
            outcome, view = sync_one(session, scope=self.scope, body=payload)
            session.commit()
        except DomainError as error:
            session.rollback()
            failure = error
        finally:
            session.close()
        if failure is not None:
            assert (failure.code, failure.status) == (expected.error, expected.status), payload
            assert _stored_rows(self.home_id) == before
            return

        assert expected.error is None, f"expected {expected.error} for {payload}, got {outcome.outcome}"
        assert outcome.outcome == expected.outcome, payload
        assert expected.state is not None
        assert {p: view[p] for p in PROPS} == expected.state.props()
        assert view["business_id"] == self.home_id
        assert view["unsubscribed"] == expected.state.unsubscribed
        after = _stored_rows(self.home_id)
        if expected.outcome == "created":
            assert view["id"] not in before
            self.model.records[view["id"]] = expected.state
        else:
            assert view["id"] == expected.target
            if expected.outcome == "replaced":
                self.model.records[view["id"]] = expected.state
                assert after[view["id"]]["updated_at"] > before[view["id"]]["updated_at"]
            else:  # unchanged or superseded: nothing written
                assert after[view["id"]]["updated_at"] == before[view["id"]]["updated_at"]
        for record_id, row in before.items():
            if record_id != view["id"]:
                assert after[record_id] == row

    @invariant()
    def stored_state_matches_model(self) -> None:
        rows = _stored_rows(self.home_id)
        assert {record_id: ({p: row[p] for p in PROPS}, row["unsubscribed"]) for record_id, row in rows.items()} == {
            record_id: (record.props(), record.unsubscribed) for record_id, record in self.model.records.items()
        }
        foreign = _stored_rows(self.away_id)
        assert list(foreign) == [self.foreign["id"]]
        assert foreign[self.foreign["id"]]["external_id"] == "x1"


SyncRules.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # Shrinking a sequence of database round trips runs into Hypothesis's five-minute cap; a failure is reported
    # at once with its whole sequence (at most 20 steps) instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestSyncRules = SyncRules.TestCase


# --- plan_records: the order of records in one list ------------------------------------------------------------

SCOPE = Scope("businesses", "ptn_test")


def _business(**fields: Any) -> Payload:
    payload = parse_record("businesses", {"name": "N", **fields})
    assert isinstance(payload, BusinessPayload)
    return payload


def _row(record_id: str, external_id: str | None) -> dict[str, Any]:
    return {"id": record_id, "external_id": external_id, "name": "N", "metadata": {}, "last_seq": 1}


def _plan(*payloads: Payload, rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    counter = iter(range(100))
    plan = plan_records(
        scope=SCOPE,
        seq=10,
        records=list(enumerate(payloads)),
        rows=rows,
        new_id=lambda: f"biz_new{next(counter)}",
    )
    return [(o.outcome, [e.code for e in o.errors]) for o in plan.outcomes]


def test_a_record_takes_the_external_id_another_gave_up_earlier_in_the_list() -> None:
    rows = [_row("biz_a", "a"), _row("biz_b", "b")]
    outcomes = _plan(_business(id="biz_b", external_id="c"), _business(id="biz_a", external_id="b"), rows=rows)
    assert outcomes == [("replaced", []), ("replaced", [])]


def test_taking_an_external_id_before_its_holder_gives_it_up_conflicts() -> None:
    rows = [_row("biz_a", "a"), _row("biz_b", "b")]
    outcomes = _plan(_business(id="biz_a", external_id="b"), _business(id="biz_b", external_id="c"), rows=rows)
    assert outcomes == [("failed", ["external_id_conflict"]), ("replaced", [])]


def test_a_new_record_takes_an_external_id_given_up_earlier_in_the_list() -> None:
    rows = [_row("biz_a", "a")]
    outcomes = _plan(_business(id="biz_a", external_id=None), _business(external_id="a"), rows=rows)
    assert outcomes == [("replaced", []), ("created", [])]


def test_a_later_record_sees_the_state_an_earlier_one_left() -> None:
    rows = [_row("biz_a", "a")]
    outcomes = _plan(_business(external_id="a", name="M"), _business(external_id="a", name="M"), rows=rows)
    assert outcomes == [("replaced", []), ("unchanged", [])]


def test_a_created_record_can_be_found_by_a_later_record_in_the_list() -> None:
    outcomes = _plan(_business(external_id="n"), _business(external_id="n", name="Renamed"), rows=[])
    assert outcomes == [("created", []), ("replaced", [])]


# --- the same chains of moves through the real SQL ----------------------------------------------------------


@pytest.fixture
def scope_with_abc() -> tuple[Scope, dict[str, str]]:
    """A partner with businesses holding external ids a, b and c."""
    with session_scope() as session:
        partner_id = create_partner(session, name="moves").partner_id
        scope = Scope("businesses", partner_id)
        by_xid = {x: sync_one(session, scope=scope, body={"external_id": x, "name": x})[1]["id"] for x in "abc"}
    return scope, by_xid


def _apply(scope: Scope, *bodies: dict[str, Any]) -> list[tuple[str, list[FieldError]]]:
    records: list[tuple[int, Payload | list[FieldError]]] = [
        (i, parse_record(scope.kind, {"name": "N", **body})) for i, body in enumerate(bodies)
    ]
    with session_scope() as session:
        seq = next_write_seq(session)
        outcomes = apply_records(session, scope=scope, seq=seq, records=records)
    return [(o.outcome, o.errors) for o in outcomes]


def _external_ids(scope: Scope) -> dict[str, str | None]:
    with session_scope() as session:
        rows = session.execute(
            text("SELECT id, external_id FROM businesses WHERE partner_id = :p"), {"p": scope.partner_id}
        )
        return {row.id: row.external_id for row in rows}


def test_a_chain_of_external_id_moves_is_written_in_one_list(scope_with_abc: tuple[Scope, dict[str, str]]) -> None:
    scope, ids_of = scope_with_abc
    outcomes = _apply(
        scope,
        {"id": ids_of["c"], "external_id": "d"},
        {"id": ids_of["b"], "external_id": "c"},
        {"id": ids_of["a"], "external_id": "b"},
        {"external_id": "a"},
    )
    assert [o for o, _ in outcomes] == ["replaced", "replaced", "replaced", "created"]
    stored = _external_ids(scope)
    assert stored[ids_of["a"]] == "b"
    assert stored[ids_of["b"]] == "c"
    assert stored[ids_of["c"]] == "d"
    assert sorted(v for v in stored.values() if v is not None) == ["a", "b", "c", "d"]


def test_a_move_onto_a_key_still_held_changes_nothing(scope_with_abc: tuple[Scope, dict[str, str]]) -> None:
    scope, ids_of = scope_with_abc
    before = _external_ids(scope)
    outcomes = _apply(scope, {"id": ids_of["a"], "external_id": "b"}, {"id": ids_of["b"], "external_id": "a"})
    assert [o for o, _ in outcomes] == ["failed", "failed"]
    assert [e.code for _, errors in outcomes for e in errors] == ["external_id_conflict", "external_id_conflict"]
    assert _external_ids(scope) == before


# --- what a replace changes --------------------------------------------------------------------------------------


def test_a_replaced_record_names_the_fields_it_changed_and_a_dry_run_their_values() -> None:
    rows = [{**_row("biz_a", "a"), "metadata": {"tier": "gold", "n": 1}}]
    payloads = [_business(external_id="a", name="M", metadata={"n": 1, "tier": "gold"})]
    plan = plan_records(
        scope=SCOPE,
        seq=10,
        records=list(enumerate(payloads)),
        rows=rows,
        new_id=lambda: "biz_new",
        describe_changes=True,
    )
    [outcome] = plan.outcomes
    # Metadata is compared as JSON (key order does not count): only the name changed.
    assert (outcome.outcome, outcome.changed_fields) == ("replaced", ["name"])
    assert outcome.changes == {"name": {"from": "N", "to": "M"}}

    real = plan_records(scope=SCOPE, seq=10, records=list(enumerate(payloads)), rows=rows, new_id=lambda: "biz_new")
    assert real.outcomes[0].changed_fields == ["name"]
    assert real.outcomes[0].changes is None  # only a dry run keeps the values
    assert "changes" not in real.outcomes[0].as_result()


def test_only_a_replaced_record_has_changed_fields() -> None:
    rows = [_row("biz_a", "a"), _row("biz_b", "b")]
    outcomes = plan_records(
        scope=SCOPE,
        seq=10,
        records=list(
            enumerate(
                [
                    _business(external_id="a", name="N"),  # unchanged
                    _business(external_id="new"),  # created
                    _business(id="biz_b", external_id=None, metadata={"k": [1]}),  # replaced: two fields
                    _business(id="biz_missing"),  # failed
                ]
            )
        ),
        rows=rows,
        new_id=lambda: "biz_new",
        describe_changes=True,
    ).outcomes
    assert [(o.outcome, o.changed_fields) for o in outcomes] == [
        ("unchanged", []),
        ("created", []),
        ("replaced", ["external_id", "metadata"]),
        ("failed", []),
    ]
    assert outcomes[2].changes == {
        "external_id": {"from": "b", "to": None},
        "metadata": {"from": {}, "to": {"k": [1]}},
    }
    # Stored compactly: an empty list is not stored, and is shown as [] when read (core.jobs.results).
    assert [("changed_fields" in o.as_result()) for o in outcomes] == [False, False, True, False]
