"""`?dry_run=true` on the single-record sync endpoints (SPEC §9): 200 with the record as the sync would leave it and
its `Sync-Outcome`, or the very problem the real sync would answer; nothing is written or locked, no write sequence
is taken, and the real sync right after does what the dry run said."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.db import session_scope
from tests.api.test_single_sync import created, sync_business, sync_customer
from tests.conftest import PartnerKey, assert_problem

DRY = {"dry_run": "true"}


def rows(partner_id: str) -> list[tuple[Any, ...]]:
    """Every business and customer of the partner as stored, with the marks any write or row lock leaves."""
    with session_scope() as session:
        return list(
            session.execute(
                text(
                    "SELECT id, external_id, name, metadata::text, updated_at, last_seq, xmin::text, xmax::text, "
                    "ctid::text FROM businesses WHERE partner_id = :p UNION ALL "
                    "SELECT id, external_id, coalesce(email_address, '') || '|' || coalesce(full_name, ''), "
                    "metadata::text, updated_at, last_seq, xmin::text, xmax::text, ctid::text FROM customers "
                    "WHERE partner_id = :p ORDER BY 1"
                ),
                {"p": partner_id},
            ).all()
        )


def write_seq() -> int:
    with session_scope() as session:
        return int(session.execute(text("SELECT last_value FROM write_seq")).scalar_one())


@pytest.fixture
def shop(client: TestClient) -> dict[str, Any]:
    return created(sync_business(client, {"external_id": "shop", "name": "Shop", "metadata": {"tier": "gold"}}))


def test_a_would_be_created_business_has_no_id_and_nothing_is_written(client: TestClient, partner: PartnerKey) -> None:
    before, seq = rows(partner.partner_id), write_seq()

    answer = created(sync_business(client, {"external_id": "new", "name": "New", "metadata": {"n": 1}}, params=DRY))

    assert answer == {
        "id": None,
        "object": "business",
        "external_id": "new",
        "name": "New",
        "metadata": {"n": 1},
        "created_at": None,
        "updated_at": None,
    }
    assert rows(partner.partner_id) == before
    assert write_seq() == seq
    real = created(sync_business(client, {"external_id": "new", "name": "New", "metadata": {"n": 1}}))
    assert real["id"].startswith("biz_")
    assert {k: v for k, v in real.items() if k not in ("id", "created_at", "updated_at")} == {
        k: v for k, v in answer.items() if k not in ("id", "created_at", "updated_at")
    }


def test_a_would_be_replaced_business_is_shown_as_it_would_be(
    client: TestClient, partner: PartnerKey, shop: dict[str, Any]
) -> None:
    before = rows(partner.partner_id)

    answer = created(
        sync_business(client, {"id": shop["id"], "external_id": "shop-2", "name": "Shop"}, params=DRY), "replaced"
    )

    # The payload's properties (metadata left out: blanked), the stored id and timestamps: nothing was written.
    assert answer == {**shop, "external_id": "shop-2", "metadata": {}}
    assert rows(partner.partner_id) == before
    real = created(sync_business(client, {"id": shop["id"], "external_id": "shop-2", "name": "Shop"}), "replaced")
    assert {k: v for k, v in real.items() if k != "updated_at"} == {
        k: v for k, v in answer.items() if k != "updated_at"
    }


def test_an_unchanged_business_is_unchanged_in_a_dry_run_too(client: TestClient, shop: dict[str, Any]) -> None:
    answer = created(sync_business(client, shop, params=DRY), "unchanged")
    assert answer == shop


def test_customers_created_replaced_and_unchanged(
    client: TestClient, partner: PartnerKey, shop: dict[str, Any]
) -> None:
    ada = created(sync_customer(client, shop["id"], {"external_id": "ada", "email_address": "ada@example.com"}))
    before = rows(partner.partner_id)

    new = created(sync_customer(client, shop["id"], {"external_id": "bob", "full_name": "Bob"}, params=DRY))
    assert (new["id"], new["business_id"], new["full_name"], new["unsubscribed"]) == (None, shop["id"], "Bob", None)
    assert (new["created_at"], new["updated_at"]) == (None, None)
    replaced = created(
        sync_customer(client, shop["id"], {"external_id": "ada", "phone_number": "+1 555 0100"}, params=DRY),
        "replaced",
    )
    assert replaced == {**ada, "email_address": None, "phone_number": "+1 555 0100"}
    assert created(sync_customer(client, shop["id"], ada, params=DRY), "unchanged") == ada
    assert rows(partner.partner_id) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"id": "cus_00000000000000000000000000"}, 404, "not_found"),
        ({"external_id": "bob", "email_address": "ADA@example.com"}, 409, "email_address_taken"),
        ({"id": "<ada>", "external_id": "cy"}, 409, "external_id_conflict"),
        ({"full_name": "No identifier"}, 422, "missing_identifier"),
        ({"external_id": "x", "colour": "red"}, 422, "unknown_field"),
        ({"external_id": "x", "email_address": "nope"}, 422, "validation_error"),
    ],
)
def test_a_dry_run_answers_the_problem_the_real_sync_would(
    client: TestClient, partner: PartnerKey, shop: dict[str, Any], body: dict[str, Any], status: int, code: str
) -> None:
    ada = created(sync_customer(client, shop["id"], {"external_id": "ada", "email_address": "ada@example.com"}))
    created(sync_customer(client, shop["id"], {"external_id": "cy"}))
    if body.get("id") == "<ada>":
        body = {**body, "id": ada["id"]}
    before = rows(partner.partner_id)

    dry = assert_problem(sync_customer(client, shop["id"], body, params=DRY), status, code)

    assert rows(partner.partner_id) == before
    real = assert_problem(sync_customer(client, shop["id"], body), status, code)
    assert dry == real


def test_a_dry_run_of_a_missing_business_is_404(client: TestClient) -> None:
    assert_problem(sync_customer(client, "biz_missing", {"external_id": "x"}, params=DRY), 404, "not_found")


def test_a_dry_run_and_a_real_sync_are_different_requests_for_an_idempotency_key(
    client: TestClient, partner: PartnerKey
) -> None:
    body = {"external_id": "idem", "name": "Idem"}
    headers = {"Idempotency-Key": "dry-then-real"}
    dry = sync_business(client, body, params=DRY, headers=headers)
    assert created(dry)["id"] is None
    replayed = sync_business(client, body, params=DRY, headers=headers)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == dry.json()
    assert_problem(sync_business(client, body, headers=headers), 422, "idempotency_key_reused")
    with session_scope() as session:
        found = session.execute(
            text("SELECT count(*) FROM businesses WHERE partner_id = :p AND external_id = 'idem'"),
            {"p": partner.partner_id},
        ).scalar_one()
    assert found == 0


def test_a_dry_run_needs_a_live_key(client: TestClient, partner: PartnerKey) -> None:
    from core.partners.service import revoke_key

    with session_scope() as session:
        revoke_key(session, key_id=partner.key_id)
    # Within the second a successful check is remembered, the request still authenticates; the write path's own
    # check of the key (in the request's transaction) refuses it.
    answer = sync_business(client, {"external_id": "late", "name": "Late"}, params=DRY)
    assert_problem(answer, 401, "unauthorized")


def test_dry_run_must_be_a_boolean(client: TestClient) -> None:
    answer = sync_business(client, {"external_id": "x", "name": "X"}, params={"dry_run": "maybe"})
    body = assert_problem(answer, 422, "validation_error")
    assert body["errors"][0]["code"] == "invalid_parameter"
    assert body["errors"][0]["path"] == "dry_run"


@pytest.mark.parametrize(
    "query",
    [
        "dry_run=true&dry_run=false",
        "dry_run=false&dry_run=true",
        "dryRun=true",
        "DRY_RUN=true",
        "dry-run=true",
    ],
)
def test_a_dry_run_asked_ambiguously_is_refused_and_writes_nothing(
    client: TestClient, partner: PartnerKey, query: str
) -> None:
    """A preview must never turn into a write: a repeated or misspelled `dry_run` is a 422, on the sync endpoints
    as on the job list."""
    before, seq = rows(partner.partner_id), write_seq()
    body = assert_problem(client.post(f"/sync/businesses?{query}", json={"name": "N"}), 422, "validation_error")
    assert body["errors"][0]["path"] == query.split("=")[0]
    assert rows(partner.partner_id) == before
    assert write_seq() == seq
    assert_problem(client.get(f"/jobs?{query}"), 422, "validation_error")


@pytest.mark.parametrize("query", ["dry_run=true", "dryRun=1"])
def test_the_legacy_endpoints_refuse_a_dry_run_rather_than_write(
    client: TestClient, partner: PartnerKey, query: str
) -> None:
    before, seq = rows(partner.partner_id), write_seq()
    body = assert_problem(client.post(f"/businesses?{query}", json={"name": "N"}), 422, "validation_error")
    assert "/sync/" in body["errors"][0]["message"]
    assert rows(partner.partner_id) == before
    assert write_seq() == seq
