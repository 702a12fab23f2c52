"""The sync rules of SPEC §3, applied to a list of records against the stored state they touch.

`plan_records` is pure: given the payloads and the rows they refer to, it decides every record's outcome, in
input order, each record seeing the state the ones before it left. `core.records.repository` loads those rows, writes
the plan in a few set-based statements and retries the whole list if a concurrent writer got in between; a dry run
(SPEC §9) plans the same way over rows it only reads, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import count
from typing import Any, Literal, cast

import orjson

from core.errors import FieldError, bounded_errors
from core.records.schemas import WRITABLE, BusinessPayload, CustomerPayload

Kind = Literal["businesses", "customers"]
# The name of one record of a kind, for messages.
SINGULAR: dict[str, str] = {"businesses": "business", "customers": "customer"}
Payload = BusinessPayload | CustomerPayload
Row = dict[str, Any]


class Outcome(StrEnum):
    """What became of a record (SPEC §3 rule 6; `cancelled`: its job was cancelled before it was processed)."""

    CREATED = "created"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Plain strings at run time (orjson takes no enum as a dict key): the enum is where they are declared.
CREATED, REPLACED, UNCHANGED, SUPERSEDED, FAILED, CANCELLED = (outcome.value for outcome in Outcome)
OUTCOMES: tuple[str, ...] = tuple(outcome.value for outcome in Outcome)
# The sequence a dry run plans with: newer than any write, as the write it previews would be if it were accepted
# now, so nothing it previews is superseded. It is never written anywhere (a dry run takes no write sequence).
PREVIEW_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a record lives: a partner's businesses, or one business's customers."""

    kind: Kind
    partner_id: str
    business_id: str | None = None


@dataclass(slots=True)
class RecordOutcome:
    """What became of one record."""

    index: int
    outcome: str
    id: str | None = None
    external_id: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    # For `replaced`: the properties whose value changed, in WRITABLE order (else empty).
    changed_fields: list[str] = field(default_factory=list)
    # For `replaced` in a dry run: each changed property's value before and after (`{"from", "to"}`).
    changes: dict[str, dict[str, Any]] | None = None

    def as_result(self) -> dict[str, Any]:
        """The result as stored: `changed_fields` only when there are some and `changes` only in a dry run, so a
        result takes no more room than it needs (core.jobs.results shows every result with `changed_fields`)."""
        result = {
            "index": self.index,
            "outcome": self.outcome,
            "id": self.id,
            "external_id": self.external_id,
            "errors": [e.as_dict() for e in bounded_errors(self.errors)] if self.errors else [],
        }
        if self.changed_fields:
            result["changed_fields"] = self.changed_fields
        if self.changes is not None:
            result["changes"] = self.changes
        return result


@dataclass(slots=True)
class Plan:
    """The writes that apply a list of records, and each record's outcome."""

    outcomes: list[RecordOutcome]
    creates: list[Row] = field(default_factory=list)
    replaces: list[Row] = field(default_factory=list)
    # Unchanged rows whose sequence must still advance, so an older write cannot overwrite them later.
    touches: list[str] = field(default_factory=list)
    # Rows that give up a key another row of this plan takes: their keys are cleared first.
    release_first: set[str] = field(default_factory=set)


def canonical_metadata(value: Any) -> bytes:
    """Metadata as canonical JSON, to compare a payload with the stored value."""
    return orjson.dumps(value if value is not None else {}, option=orjson.OPT_SORT_KEYS)


def desired_state(kind: Kind, payload: Payload, current_external_id: str | None) -> Row:
    """The properties a record has once the payload replaced it (everything not sent is blanked)."""
    external_id = payload.external_id if payload.sets_external_id else current_external_id
    if kind == "customers":
        customer = cast(CustomerPayload, payload)
        return {
            "external_id": external_id,
            "metadata": customer.metadata or {},
            "email_address": customer.email_address,
            "phone_number": customer.phone_number,
            "full_name": customer.full_name,
        }
    return {"external_id": external_id, "metadata": payload.metadata or {}, "name": cast(BusinessPayload, payload).name}


def changed_fields(kind: Kind, row: Row, state: Row) -> list[str]:
    """The writable properties whose value differs between a stored row and the state a payload asks for, in
    WRITABLE order; empty when the payload equals the stored record (rule 6: `unchanged`)."""
    changed: list[str] = []
    for prop in WRITABLE[kind]:
        if prop == "metadata":
            if canonical_metadata(row["metadata"]) != canonical_metadata(state["metadata"]):
                changed.append(prop)
        elif row[prop] != state[prop]:
            changed.append(prop)
    return changed


def _lower(email: str | None) -> str | None:
    return email.lower() if email is not None else None


def plan_records(
    *,
    scope: Scope,
    seq: int,
    records: Sequence[tuple[int, Payload | list[FieldError]]],
    rows: Sequence[Row],
    new_id: Callable[[], str],
    create_only: bool = False,
    describe_changes: bool = False,
) -> Plan:
    """Decide every record's outcome, in input order, against `rows` (every stored row the records name).

    `create_only` (the legacy create endpoints): every record is a new one, needs no identifier, and an
    external_id already held is a conflict rather than a target. `describe_changes` (a dry run): a replaced
    record's outcome also holds each changed property's value before and after.
    """
    kind = scope.kind
    customers = kind == "customers"
    by_id: dict[str, Row] = {row["id"]: dict(row) for row in rows}
    by_xid: dict[str, str] = {r["external_id"]: i for i, r in by_id.items() if r["external_id"] is not None}
    by_email: dict[str, str] = {}
    if customers:
        by_email = {r["email_address"].lower(): i for i, r in by_id.items() if r["email_address"] is not None}
    created_ids: set[str] = set()
    changed: dict[str, Row] = {}
    touched: set[str] = set()
    released: dict[tuple[str, str], str] = {}  # (key kind, key) -> the row of this plan that gave it up
    plan = Plan(outcomes=[])

    for index, payload in records:
        if isinstance(payload, list):
            plan.outcomes.append(RecordOutcome(index, FAILED, errors=payload))
            continue
        target: Row | None = None
        if create_only:
            pass
        elif payload.id is not None:
            target = by_id.get(payload.id)
            if target is None:
                plan.outcomes.append(
                    RecordOutcome(
                        index,
                        FAILED,
                        external_id=payload.external_id,
                        errors=[FieldError("not_found", f"no {SINGULAR[kind]} with id {payload.id!r}", "id")],
                    )
                )
                continue
        elif payload.external_id is not None:
            holder = by_xid.get(payload.external_id)
            target = by_id[holder] if holder is not None else None
        else:
            plan.outcomes.append(
                RecordOutcome(
                    index,
                    FAILED,
                    errors=[FieldError("missing_identifier", "give an id or an external_id", None)],
                )
            )
            continue

        if target is not None and target["last_seq"] > seq:
            plan.outcomes.append(RecordOutcome(index, SUPERSEDED, target["id"], target["external_id"]))
            continue

        state = desired_state(kind, payload, target["external_id"] if target is not None else None)
        target_id = target["id"] if target is not None else None
        errors: list[FieldError] = []
        xid = state["external_id"]
        if xid is not None and by_xid.get(xid, target_id) != target_id:
            errors.append(
                FieldError(
                    "external_id_conflict",
                    f"external_id {xid!r} already belongs to {SINGULAR[kind]} {by_xid[xid]}",
                    "external_id",
                )
            )
        email = _lower(state.get("email_address"))
        if email is not None and by_email.get(email, target_id) != target_id:
            errors.append(
                FieldError(
                    "email_address_taken",
                    f"email_address {state['email_address']!r} already belongs to customer {by_email[email]}",
                    "email_address",
                )
            )
        if errors:
            # A record that would have been created is labelled with the external_id it was sent with.
            label = target["external_id"] if target is not None else payload.external_id
            plan.outcomes.append(RecordOutcome(index, FAILED, target_id, label, errors))
            continue

        if target is None:
            row = {"id": new_id(), **state, "last_seq": seq}
            by_id[row["id"]] = row
            created_ids.add(row["id"])
            if xid is not None:
                by_xid[xid] = row["id"]
                if released and ("x", xid) in released:
                    plan.release_first.add(released[("x", xid)])
            if email is not None:
                by_email[email] = row["id"]
                if released and ("e", email) in released:
                    plan.release_first.add(released[("e", email)])
            plan.outcomes.append(RecordOutcome(index, CREATED, row["id"], xid))
            continue

        changed_props = changed_fields(kind, target, state)
        if not changed_props:
            if target["last_seq"] < seq and target["id"] not in created_ids:
                touched.add(target["id"])
            target["last_seq"] = max(target["last_seq"], seq)
            plan.outcomes.append(RecordOutcome(index, UNCHANGED, target["id"], xid))
            continue
        changes = (
            {prop: {"from": target[prop], "to": state[prop]} for prop in changed_props} if describe_changes else None
        )

        _move_key(by_xid, released, "x", target["external_id"], xid, target["id"], plan)
        if customers:
            _move_key(by_email, released, "e", _lower(target["email_address"]), email, target["id"], plan)
        target.update(state)
        target["last_seq"] = seq
        if target["id"] not in created_ids:
            changed[target["id"]] = target
            touched.discard(target["id"])
        plan.outcomes.append(
            RecordOutcome(index, REPLACED, target["id"], xid, changed_fields=changed_props, changes=changes)
        )

    plan.creates = [by_id[i] for i in created_ids]
    plan.replaces = list(changed.values())
    plan.touches = sorted(touched - changed.keys())
    plan.release_first &= changed.keys()
    return plan


@dataclass(slots=True)
class Preview:
    """What a dry run of some records would do: each record's outcome, and the would-be state of every stored row
    it would replace."""

    outcomes: list[RecordOutcome]
    replaced: list[Row]


def preview(*, scope: Scope, records: Sequence[tuple[int, Payload | list[FieldError]]], rows: Sequence[Row]) -> Preview:
    """Plan records exactly as a real sync does (`plan_records`), as a dry run: as the newest write there is (nothing
    is superseded), describing each replace's changes; a would-be created record has no id."""
    numbers = count()
    plan = plan_records(
        scope=scope,
        seq=PREVIEW_SEQ,
        records=records,
        rows=rows,
        new_id=lambda: f"would-be-created-{next(numbers)}",
        describe_changes=True,
    )
    for outcome in plan.outcomes:
        if outcome.outcome == CREATED:
            outcome.id = None
    return Preview(plan.outcomes, plan.replaces)


@dataclass(frozen=True, slots=True)
class NamedKeys:
    """The ids, external_ids and (lower-cased) email addresses some records name."""

    ids: frozenset[str]
    external_ids: frozenset[str]
    emails: frozenset[str]

    @classmethod
    def of(cls, records: Sequence[tuple[int, Payload | list[FieldError]]]) -> NamedKeys:
        payloads = [p for _, p in records if not isinstance(p, list)]
        return cls(
            frozenset(p.id for p in payloads if p.id is not None),
            frozenset(p.external_id for p in payloads if p.external_id is not None),
            frozenset(e.lower() for p in payloads if (e := getattr(p, "email_address", None)) is not None),
        )

    def leave_reachable(self, before: Row, *, ids_in_batch: bool) -> bool:
        """Whether another record of the same batch than these could still name the stored row `before` (as it was
        when these records were planned): then a dry run must carry what these records make of it to the records
        after them.

        A record names a row by its id, its external_id or (customers) its email address. A later one cannot use a
        key one of these records holds, for both would fail `duplicate_in_batch` (SPEC §4); nor an id, if no record
        of the batch has one. Any key a row takes from these records is one of theirs, so only its keys of before
        count.
        """
        if ids_in_batch and before["id"] not in self.ids:
            return True
        if before["external_id"] is not None and before["external_id"] not in self.external_ids:
            return True
        email = before.get("email_address")
        return email is not None and email.lower() not in self.emails


def _move_key(
    index: dict[str, str],
    released: dict[tuple[str, str], str],
    key_kind: str,
    old: str | None,
    new: str | None,
    row_id: str,
    plan: Plan,
) -> None:
    """Move a unique key of `row_id` from `old` to `new` in the in-memory index."""
    if old == new:
        return
    if old is not None and index.get(old) == row_id:
        del index[old]
        released[(key_kind, old)] = row_id
    if new is not None:
        index[new] = row_id
        giver = released.get((key_kind, new))
        if giver is not None and giver != row_id:
            plan.release_first.add(giver)
