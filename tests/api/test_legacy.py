"""The legacy (pre-sync) endpoints: creates, merge-updates, the two customer batches, and their deprecation headers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import settings
from core.db import session_scope
from core.models import Customer
from core.records import legacy
from core.records import service as resources

SUCCESSOR = 'rel="successor-version"'


def assert_deprecated(response: Any, successor: str) -> None:
    assert response.headers["Deprecation"] == "true"
    assert response.headers["Link"] == f"<{successor}>; {SUCCESSOR}"


def make_business(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/businesses", json={"name": "Bakery", **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def make_customer(client: TestClient, business_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"/businesses/{business_id}/customers", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get_customer(client: TestClient, customer_id: str) -> dict[str, Any]:
    response = client.get(f"/customers/{customer_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def last_seq(customer_id: str) -> int:
    with session_scope() as session:
        return session.scalars(select(Customer.last_seq).where(Customer.id == customer_id)).one()


# --- businesses ---------------------------------------------------------------------------------------------------


def test_create_business(client: TestClient) -> None:
    response = client.post("/businesses", json={"name": "Bakery", "external_id": "b-1", "metadata": {"tier": 2}})
    assert response.status_code == 200
    assert_deprecated(response, "/sync/businesses")
    body = response.json()
    assert body["id"].startswith("biz_")
    assert (body["name"], body["external_id"], body["metadata"]) == ("Bakery", "b-1", {"tier": 2})
    assert client.get(f"/businesses/{body['id']}").json() == body


def test_create_business_needs_only_a_name(client: TestClient) -> None:
    body = make_business(client)
    assert (body["external_id"], body["metadata"]) == (None, {})


def test_create_business_without_name_is_422_with_headers(client: TestClient) -> None:
    response = client.post("/businesses", json={"external_id": "b-1"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert_deprecated(response, "/sync/businesses")
    assert response.json()["errors"] == [{"code": "required", "message": "this field is required", "path": "name"}]


def test_create_business_reports_every_error(client: TestClient) -> None:
    response = client.post("/businesses", json={"name": "", "nickname": "x", "id": "biz_x"})
    assert response.status_code == 422
    assert {(e["path"], e["code"]) for e in response.json()["errors"]} == {
        ("name", "too_short"),
        ("nickname", "unknown_field"),
        ("id", "id_not_allowed"),
    }


def test_create_business_with_taken_external_id_is_409(client: TestClient) -> None:
    first = make_business(client, external_id="b-1")
    response = client.post("/businesses", json={"name": "Other", "external_id": "b-1"})
    assert response.status_code == 409
    assert response.json()["code"] == "external_id_conflict"
    assert_deprecated(response, "/sync/businesses")
    listed = client.get("/businesses").json()["data"]
    assert [b["id"] for b in listed] == [first["id"]]


def test_update_business_changes_only_the_fields_sent(client: TestClient) -> None:
    business = make_business(client, external_id="b-1", metadata={"tier": 2})
    renamed = client.post(f"/businesses/{business['id']}", json={"name": "Bakery & Co"})
    assert renamed.status_code == 200
    assert_deprecated(renamed, "/sync/businesses")
    assert renamed.json() | {"updated_at": None} == business | {"name": "Bakery & Co", "updated_at": None}

    retagged = client.post(f"/businesses/{business['id']}", json={"metadata": {"tier": 3}}).json()
    assert (retagged["name"], retagged["external_id"], retagged["metadata"]) == ("Bakery & Co", "b-1", {"tier": 3})

    cleared = client.post(f"/businesses/{business['id']}", json={"external_id": None}).json()
    assert (cleared["name"], cleared["external_id"], cleared["metadata"]) == ("Bakery & Co", None, {"tier": 3})


def test_update_business_with_nothing_new_keeps_updated_at(client: TestClient) -> None:
    business = make_business(client, external_id="b-1")
    again = client.post(f"/businesses/{business['id']}", json={"name": "Bakery"})
    assert again.status_code == 200
    assert again.json() == business


def test_update_business_accepts_the_object_read_back(client: TestClient) -> None:
    business = make_business(client)
    response = client.post(f"/businesses/{business['id']}", json=business | {"name": "New"})
    assert response.status_code == 200
    assert response.json()["name"] == "New"


def test_update_business_validates_the_fields_sent(client: TestClient) -> None:
    business = make_business(client)
    response = client.post(f"/businesses/{business['id']}", json={"name": None, "colour": "red"})
    assert response.status_code == 422
    assert {(e["path"], e["code"]) for e in response.json()["errors"]} == {
        ("name", "invalid_type"),
        ("colour", "unknown_field"),
    }
    assert client.get(f"/businesses/{business['id']}").json() == business


def test_update_business_refuses_another_id_in_the_body(client: TestClient) -> None:
    business = make_business(client)
    response = client.post(f"/businesses/{business['id']}", json={"id": "biz_other", "name": "New"})
    assert response.status_code == 422
    assert [e["code"] for e in response.json()["errors"]] == ["id_mismatch"]


def test_update_business_to_a_taken_external_id_is_409_and_changes_nothing(client: TestClient) -> None:
    make_business(client, external_id="b-1")
    second = make_business(client, external_id="b-2", name="Second")
    response = client.post(f"/businesses/{second['id']}", json={"external_id": "b-1", "name": "Renamed"})
    assert response.status_code == 409
    assert response.json()["code"] == "external_id_conflict"
    assert client.get(f"/businesses/{second['id']}").json() == second


def test_update_unknown_or_foreign_business_is_404_with_headers(client: TestClient, other_partner: Any) -> None:
    response = client.post("/businesses/biz_missing", json={"name": "x"})
    assert response.status_code == 404
    assert_deprecated(response, "/sync/businesses")
    foreign = client.post("/businesses", json={"name": "Theirs"}, auth=other_partner.auth).json()
    assert client.post(f"/businesses/{foreign['id']}", json={"name": "Mine"}).status_code == 404
    assert client.post("/businesses/biz_%00", json={"name": "x"}).status_code == 404


# --- single customers ---------------------------------------------------------------------------------------------


def test_create_customer(client: TestClient) -> None:
    business = make_business(client)
    response = client.post(
        f"/businesses/{business['id']}/customers",
        json={"email_address": "ann@example.com", "full_name": "Ann", "external_id": "c-1"},
    )
    assert response.status_code == 200
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers")
    body = response.json()
    assert body["id"].startswith("cus_")
    assert (body["business_id"], body["email_address"], body["full_name"], body["external_id"]) == (
        business["id"],
        "ann@example.com",
        "Ann",
        "c-1",
    )


def test_create_customer_requires_an_email_address(client: TestClient) -> None:
    business = make_business(client)
    for body in ({"full_name": "Ann"}, {"email_address": None}):
        response = client.post(f"/businesses/{business['id']}/customers", json=body)
        assert response.status_code == 422
        assert_deprecated(response, f"/sync/businesses/{business['id']}/customers")
        assert [(e["path"], e["code"]) for e in response.json()["errors"]] == [("email_address", "required")]


def test_create_customer_with_taken_email_or_external_id_is_409(client: TestClient) -> None:
    business = make_business(client)
    make_customer(client, business["id"], email_address="ann@example.com", external_id="c-1")
    taken_email = client.post(f"/businesses/{business['id']}/customers", json={"email_address": "ANN@example.com"})
    assert taken_email.status_code == 409
    assert taken_email.json()["code"] == "email_address_taken"
    taken_xid = client.post(
        f"/businesses/{business['id']}/customers", json={"email_address": "bob@example.com", "external_id": "c-1"}
    )
    assert taken_xid.status_code == 409
    assert taken_xid.json()["code"] == "external_id_conflict"


def test_the_same_email_address_is_fine_in_another_business(client: TestClient) -> None:
    first, second = make_business(client), make_business(client)
    make_customer(client, first["id"], email_address="ann@example.com")
    make_customer(client, second["id"], email_address="ann@example.com")


def test_create_customer_of_unknown_business_is_404(client: TestClient) -> None:
    response = client.post("/businesses/biz_missing/customers", json={"email_address": "ann@example.com"})
    assert response.status_code == 404
    assert_deprecated(response, "/sync/businesses/biz_missing/customers")


def test_update_customer_changes_only_the_fields_sent(client: TestClient) -> None:
    business = make_business(client)
    customer = make_customer(
        client, business["id"], email_address="ann@example.com", phone_number="+1 555 0100", metadata={"vip": True}
    )
    response = client.post(f"/customers/{customer['id']}", json={"full_name": "Ann Smith"})
    assert response.status_code == 200
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers")
    updated = response.json()
    assert updated | {"updated_at": None} == customer | {"full_name": "Ann Smith", "updated_at": None}
    assert get_customer(client, customer["id"]) == updated

    unreachable = client.post(f"/customers/{customer['id']}", json={"phone_number": None}).json()
    assert (unreachable["phone_number"], unreachable["email_address"], unreachable["full_name"]) == (
        None,
        "ann@example.com",
        "Ann Smith",
    )


def test_update_customer_to_a_taken_email_is_409(client: TestClient) -> None:
    business = make_business(client)
    make_customer(client, business["id"], email_address="ann@example.com")
    bob = make_customer(client, business["id"], email_address="bob@example.com")
    response = client.post(f"/customers/{bob['id']}", json={"email_address": "Ann@Example.com"})
    assert response.status_code == 409
    assert response.json()["code"] == "email_address_taken"
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers")
    assert get_customer(client, bob["id"]) == bob


def test_update_unknown_customer_is_404(client: TestClient) -> None:
    response = client.post("/customers/cus_missing", json={"full_name": "x"})
    assert response.status_code == 404
    assert_deprecated(response, "/sync/businesses/{business_id}/customers")


def test_each_legacy_write_takes_a_write_sequence_number(client: TestClient) -> None:
    business = make_business(client)
    customer = make_customer(client, business["id"], email_address="ann@example.com")
    created_seq = last_seq(customer["id"])
    client.post(f"/customers/{customer['id']}", json={"full_name": "Ann"})
    assert last_seq(customer["id"]) > created_seq


# --- headers, auth, idempotency -----------------------------------------------------------------------------------


def test_unauthenticated_answers_are_deprecated_too(client: TestClient) -> None:
    response = client.post("/businesses", json={"name": "x"}, auth=None)
    assert response.status_code == 401
    assert_deprecated(response, "/sync/businesses")


def test_malformed_body_answers_are_deprecated_too(client: TestClient) -> None:
    response = client.post("/businesses", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert_deprecated(response, "/sync/businesses")


def test_idempotent_replay_keeps_the_headers_and_creates_once(client: TestClient) -> None:
    headers = {"Idempotency-Key": "create-bakery"}
    first = client.post("/businesses", json={"name": "Bakery"}, headers=headers)
    again = client.post("/businesses", json={"name": "Bakery"}, headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert_deprecated(again, "/sync/businesses")
    assert len(client.get("/businesses").json()["data"]) == 1


def test_the_legacy_operations_are_marked_deprecated_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/businesses"]["post"]["deprecated"] is True
    assert paths["/customers/{customer_id}"]["post"]["deprecated"] is True
    assert "deprecated" not in paths["/businesses"]["get"]


# --- customers/batch: partial success -----------------------------------------------------------------------------


def test_batch_create_is_a_partial_success(client: TestClient) -> None:
    business = make_business(client)
    taken = make_customer(client, business["id"], email_address="taken@example.com")
    response = client.post(
        f"/businesses/{business['id']}/customers/batch",
        json={
            "customers": [
                {"email_address": "ann@example.com", "full_name": "Ann"},
                {"full_name": "No Email"},
                {"email_address": "not-an-address", "phone_number": "x", "colour": "red"},
                {"email_address": "TAKEN@example.com"},
                "not an object",
                {"email_address": "bob@example.com", "external_id": "c-2"},
            ]
        },
    )
    assert response.status_code == 200
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers/batch")
    body = response.json()
    assert set(body) == {"customers", "errors"}
    customers = body["customers"]
    assert [c is not None for c in customers] == [True, False, False, False, False, True]
    assert customers[0]["email_address"] == "ann@example.com"
    assert customers[5]["external_id"] == "c-2"
    assert all(set(e) == {"message", "path"} for e in body["errors"])
    assert [e["path"] for e in body["errors"]] == [
        "customers[1].email_address",
        "customers[2].email_address",
        "customers[2].phone_number",
        "customers[2].colour",
        "customers[3].email_address",
        "customers[4]",
    ]
    assert taken["id"] in body["errors"][4]["message"]
    assert get_customer(client, customers[0]["id"]) == customers[0]
    listed = client.get(f"/businesses/{business['id']}/customers").json()["data"]
    assert {c["id"] for c in listed} == {taken["id"], customers[0]["id"], customers[5]["id"]}


def test_batch_create_fails_records_sharing_a_key(client: TestClient) -> None:
    business = make_business(client)
    response = client.post(
        f"/businesses/{business['id']}/customers/batch",
        json={
            "customers": [
                {"email_address": "ann@example.com"},
                {"email_address": "ANN@example.com"},
                {"email_address": "bob@example.com"},
            ]
        },
    )
    body = response.json()
    assert [c is not None for c in body["customers"]] == [False, False, True]
    assert [e["path"] for e in body["errors"]] == ["customers[0].email_address", "customers[1].email_address"]


def test_batch_create_takes_up_to_the_limit(client: TestClient) -> None:
    business = make_business(client)
    limit = settings.legacy_max_batch_records
    customers = [{"email_address": f"c{i}@example.com"} for i in range(limit + 1)]
    too_many = client.post(f"/businesses/{business['id']}/customers/batch", json={"customers": customers})
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "too_many_records"
    assert str(limit) in too_many.json()["detail"]
    assert_deprecated(too_many, f"/sync/businesses/{business['id']}/customers/batch")

    response = client.post(f"/businesses/{business['id']}/customers/batch", json={"customers": customers[:limit]})
    assert response.status_code == 200
    body = response.json()
    assert body["errors"] == []
    assert len(body["customers"]) == limit
    assert all(c is not None for c in body["customers"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"businesses": []}, 422, "invalid_envelope"),
        ({"customers": {}}, 422, "invalid_envelope"),
        ([], 422, "invalid_envelope"),
        ({"customers": []}, 422, "empty_batch"),
    ],
)
@pytest.mark.parametrize("endpoint", ["batch", "batch_update"])
def test_batch_envelope_errors(client: TestClient, endpoint: str, body: Any, status: int, code: str) -> None:
    business = make_business(client)
    response = client.post(f"/businesses/{business['id']}/customers/{endpoint}", json=body)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers/batch")


def test_batch_of_unknown_business_is_404(client: TestClient) -> None:
    response = client.post("/businesses/biz_missing/customers/batch", json={"customers": [{"email_address": "a@b.co"}]})
    assert response.status_code == 404


def test_batch_refuses_a_body_that_is_not_json(client: TestClient) -> None:
    business = make_business(client)
    url = f"/businesses/{business['id']}/customers/batch"
    assert client.post(url, content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert client.post(url, content=b"x", headers={"content-type": "text/csv"}).status_code == 415


# --- customers/batch_update: all or nothing -----------------------------------------------------------------------


def make_customers(client: TestClient, business_id: str, count: int) -> list[dict[str, Any]]:
    return [
        make_customer(client, business_id, email_address=f"c{i}@example.com", full_name=f"C{i}", external_id=f"x{i}")
        for i in range(count)
    ]


def test_batch_update_changes_only_the_fields_sent(client: TestClient) -> None:
    business = make_business(client)
    first, second = make_customers(client, business["id"], 2)
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={
            "customers": [
                {"id": second["id"], "email_address": "second@example.com"},
                {"id": first["id"], "full_name": "First", "metadata": {"a": 1}},
            ]
        },
    )
    assert response.status_code == 200
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers/batch")
    updated = response.json()["customers"]
    assert [c["id"] for c in updated] == [second["id"], first["id"]]
    assert updated[0] | {"updated_at": None} == second | {"email_address": "second@example.com", "updated_at": None}
    assert updated[1] | {"updated_at": None} == first | {"full_name": "First", "metadata": {"a": 1}, "updated_at": None}
    assert get_customer(client, first["id"]) == updated[1]


def test_batch_update_can_hand_an_email_address_on(client: TestClient) -> None:
    business = make_business(client)
    first, second = make_customers(client, business["id"], 2)
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={
            "customers": [
                {"id": first["id"], "email_address": "new@example.com"},
                {"id": second["id"], "email_address": first["email_address"]},
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert [c["email_address"] for c in response.json()["customers"]] == ["new@example.com", "c0@example.com"]


def test_batch_update_ending_with_a_shared_email_changes_nothing(client: TestClient) -> None:
    business = make_business(client)
    customers = make_customers(client, business["id"], 3)
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={
            "customers": [
                {"id": customers[0]["id"], "full_name": "Would change"},
                {"id": customers[1]["id"], "email_address": "same@example.com"},
                {"id": customers[2]["id"], "email_address": "SAME@example.com"},
            ]
        },
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers/batch")
    problem = response.json()
    assert problem["code"] == "duplicate_in_batch"
    assert [e["path"] for e in problem["errors"]] == ["customers[1].email_address", "customers[2].email_address"]
    assert [get_customer(client, c["id"]) for c in customers] == customers


def test_batch_update_conflicting_with_stored_customers_is_409_and_changes_nothing(client: TestClient) -> None:
    business = make_business(client)
    customers = make_customers(client, business["id"], 3)
    before = [last_seq(c["id"]) for c in customers]
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={
            "customers": [
                {"id": customers[0]["id"], "full_name": "Would change"},
                {"id": customers[1]["id"], "email_address": "C2@example.com"},
                {"id": customers[2]["id"], "external_id": "x0"},
            ]
        },
    )
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "conflict"
    assert [(e["path"], e["code"]) for e in problem["errors"]] == [
        ("customers[1].email_address", "email_address_taken"),
        ("customers[2].external_id", "external_id_conflict"),
    ]
    assert [get_customer(client, c["id"]) for c in customers] == customers
    assert [last_seq(c["id"]) for c in customers] == before


def test_batch_update_lists_every_error(client: TestClient, other_partner: Any) -> None:
    business = make_business(client)
    customers = make_customers(client, business["id"], 3)
    foreign_business = client.post("/businesses", json={"name": "Theirs"}, auth=other_partner.auth).json()
    foreign = client.post(
        f"/businesses/{foreign_business['id']}/customers",
        json={"email_address": "f@example.com"},
        auth=other_partner.auth,
    ).json()
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={
            "customers": [
                {"id": customers[0]["id"], "full_name": "Would change"},
                {"id": "cus_missing", "full_name": "x"},
                {"id": customers[1]["id"], "email_address": "nope", "phone_number": "?", "colour": "red"},
                {"full_name": "No id"},
                {"id": foreign["id"], "full_name": "Not yours"},
                {"id": customers[2]["id"], "email_address": "c0@example.com"},
                7,
            ]
        },
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert [(e["path"], e["code"]) for e in problem["errors"]] == [
        ("customers[1].id", "not_found"),
        ("customers[2].email_address", "invalid_email"),
        ("customers[2].phone_number", "invalid_phone"),
        ("customers[2].colour", "unknown_field"),
        ("customers[3].id", "missing_identifier"),
        ("customers[4].id", "not_found"),
        ("customers[5].email_address", "email_address_taken"),
        ("customers[6]", "invalid_record"),
    ]
    assert [get_customer(client, c["id"]) for c in customers] == customers


def test_batch_update_refuses_the_same_customer_twice(client: TestClient) -> None:
    business = make_business(client)
    (customer,) = make_customers(client, business["id"], 1)
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={"customers": [{"id": customer["id"], "full_name": "A"}, {"id": customer["id"], "phone_number": "123"}]},
    )
    assert response.status_code == 422
    assert {(e["path"], e["code"]) for e in response.json()["errors"]} == {
        ("customers[0].id", "duplicate_in_batch"),
        ("customers[1].id", "duplicate_in_batch"),
    }
    assert get_customer(client, customer["id"]) == customer


def test_batch_update_takes_up_to_the_limit(client: TestClient) -> None:
    business = make_business(client)
    (customer,) = make_customers(client, business["id"], 1)
    limit = settings.legacy_max_batch_records
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={"customers": [{"id": customer["id"]}] * (limit + 1)},
    )
    assert response.status_code == 413
    assert str(limit) in response.json()["detail"]
    assert_deprecated(response, f"/sync/businesses/{business['id']}/customers/batch")


def test_nul_characters_are_validation_errors_or_unknown_ids(client: TestClient) -> None:
    business = make_business(client)
    (customer,) = make_customers(client, business["id"], 1)
    created = client.post(
        f"/businesses/{business['id']}/customers", json={"email_address": "a@b.co", "full_name": "A\u0000"}
    )
    assert created.status_code == 422
    assert [(e["path"], e["code"]) for e in created.json()["errors"]] == [("full_name", "nul_character")]
    assert client.post("/customers/cus_%00", json={"full_name": "x"}).status_code == 404
    response = client.post(
        f"/businesses/{business['id']}/customers/batch_update",
        json={"customers": [{"id": "cus_\u0000"}, {"id": customer["id"], "full_name": "B\u0000"}]},
    )
    assert response.status_code == 422
    assert [(e["path"], e["code"]) for e in response.json()["errors"]] == [
        ("customers[0].id", "not_found"),
        ("customers[1].full_name", "nul_character"),
    ]


def test_concurrent_merge_updates_keep_both_changes(client: TestClient, partner: Any) -> None:
    """The stored record is locked before the fields sent are laid over it, so no update is lost."""
    business = make_business(client)
    (customer,) = make_customers(client, business["id"], 1)

    def update(session: Session, body: dict[str, Any]) -> None:
        stored = resources.get_customer(session, partner_id=partner.partner_id, customer_id=customer["id"])
        legacy.update_customer(session, customer=stored, body=body)

    with session_scope() as first:
        update(first, {"full_name": "First"})
        second = threading.Thread(target=lambda: _in_own_session(update, {"phone_number": "555 0100"}))
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive(), "the second update must wait for the first to commit"
    second.join(timeout=10)
    assert not second.is_alive()
    stored = get_customer(client, customer["id"])
    assert (stored["full_name"], stored["phone_number"]) == ("First", "555 0100")


def _in_own_session(write: Callable[[Session, dict[str, Any]], None], body: dict[str, Any]) -> None:
    with session_scope() as session:
        write(session, body)
