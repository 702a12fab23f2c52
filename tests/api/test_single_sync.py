"""Single-record sync (SPEC §3, §4 "Sync, single") and Idempotency-Key (SPEC §1), through HTTP on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.db import new_session, session_scope
from core.errors import DomainError
from core.partners import idempotency
from tests.conftest import PartnerKey, assert_problem

BUSINESS_FIELDS = {"id", "object", "external_id", "name", "metadata", "created_at", "updated_at"}
CUSTOMER_FIELDS = {
    "id",
    "object",
    "business_id",
    "external_id",
    "email_address",
    "phone_number",
    "full_name",
    "metadata",
    "unsubscribed",
    "created_at",
    "updated_at",
}


def sync_business(client: TestClient, body: Any, **kwargs: Any) -> httpx.Response:
    response: httpx.Response = client.post("/sync/businesses", json=body, **kwargs)
    return response


def sync_customer(client: TestClient, business_id: str, body: Any, **kwargs: Any) -> httpx.Response:
    response: httpx.Response = client.post(f"/sync/businesses/{business_id}/customers", json=body, **kwargs)
    return response


def created(response: httpx.Response, outcome: str = "created") -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Sync-Outcome"] == outcome
    body: dict[str, Any] = response.json()
    return body


def stored(table: str, record_id: str) -> dict[str, Any]:
    """A row exactly as PostgreSQL holds it (timestamps to the microsecond)."""
    with session_scope() as session:
        row = session.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": record_id}).mappings().one()
        return dict(row)


def count(table: str, column: str, value: str) -> int:
    with session_scope() as session:
        query = text(f"SELECT count(*) FROM {table} WHERE {column} = :v")
        return int(session.execute(query, {"v": value}).scalar_one())


@pytest.fixture
def business(client: TestClient) -> dict[str, Any]:
    return created(sync_business(client, {"external_id": "biz-1", "name": "Bakery"}))


# --- rules 1–4, 6: targets, create and replace ------------------------------------------------------------------


def test_business_is_created_by_external_id(client: TestClient, partner: PartnerKey) -> None:
    body = created(sync_business(client, {"external_id": "b-1", "name": "Bakery", "metadata": {"tier": "gold"}}))
    assert set(body) == BUSINESS_FIELDS
    assert body["id"].startswith("biz_")
    assert body["object"] == "business"
    assert (body["external_id"], body["name"], body["metadata"]) == ("b-1", "Bakery", {"tier": "gold"})
    assert body["created_at"].endswith("Z")
    assert body["created_at"] == body["updated_at"]
    assert client.get(f"/businesses/{body['id']}").json() == body
    assert count("businesses", "partner_id", partner.partner_id) == 1


def test_customer_is_created_by_external_id(client: TestClient, business: dict[str, Any]) -> None:
    body = created(
        sync_customer(
            client,
            business["id"],
            {"external_id": "c-1", "email_address": "Ann@Example.com", "phone_number": "+1 (555) 010-0000"},
        )
    )
    assert set(body) == CUSTOMER_FIELDS
    assert body["id"].startswith("cus_")
    assert body["object"] == "customer"
    assert body["business_id"] == business["id"]
    assert body["email_address"] == "Ann@Example.com"
    assert body["full_name"] is None
    assert body["metadata"] == {}
    assert body["unsubscribed"] is None
    assert client.get(f"/customers/{body['id']}").json() == body


def test_the_same_payload_again_is_unchanged_and_writes_nothing(client: TestClient) -> None:
    payload = {"external_id": "b-1", "name": "Bakery", "metadata": {"a": [1, 2], "b": {"c": None}}}
    first = created(sync_business(client, payload))
    row = stored("businesses", first["id"])
    # Key order in metadata does not matter: JSON objects are compared as values.
    again = created(sync_business(client, {**payload, "metadata": {"b": {"c": None}, "a": [1, 2]}}), "unchanged")
    assert again == first
    assert stored("businesses", first["id"])["updated_at"] == row["updated_at"]


def test_replace_blanks_every_customer_property_not_sent(client: TestClient, business: dict[str, Any]) -> None:
    full = created(
        sync_customer(
            client,
            business["id"],
            {
                "external_id": "c-1",
                "email_address": "ann@example.com",
                "phone_number": "555-0100",
                "full_name": "Ann",
                "metadata": {"vip": True},
            },
        )
    )
    before = stored("customers", full["id"])
    body = created(sync_customer(client, business["id"], {"external_id": "c-1"}), "replaced")
    assert body["id"] == full["id"]
    assert (body["email_address"], body["phone_number"], body["full_name"], body["metadata"]) == (None, None, None, {})
    assert body["created_at"] == full["created_at"]
    assert stored("customers", full["id"])["updated_at"] > before["updated_at"]
    assert client.get(f"/customers/{full['id']}").json() == body


def test_replace_blanks_business_metadata_not_sent(client: TestClient) -> None:
    first = created(sync_business(client, {"external_id": "b-1", "name": "Bakery", "metadata": {"x": 1}}))
    body = created(sync_business(client, {"external_id": "b-1", "name": "Bakery & Co"}), "replaced")
    assert (body["id"], body["name"], body["metadata"]) == (first["id"], "Bakery & Co", {})
    # Explicit null metadata is the empty object too: sending it again changes nothing.
    created(sync_business(client, {"external_id": "b-1", "name": "Bakery & Co", "metadata": None}), "unchanged")


def test_id_takes_precedence_and_a_new_external_id_moves_the_record(client: TestClient, partner: PartnerKey) -> None:
    a = created(sync_business(client, {"external_id": "a", "name": "A"}))
    body = created(sync_business(client, {"id": a["id"], "external_id": "a2", "name": "A"}), "replaced")
    assert (body["id"], body["external_id"]) == (a["id"], "a2")
    assert count("businesses", "partner_id", partner.partner_id) == 1
    # The old external_id is free: syncing it now creates a new record.
    other = created(sync_business(client, {"external_id": "a", "name": "New A"}))
    assert other["id"] != a["id"]
    assert client.get(f"/businesses/{a['id']}").json()["external_id"] == "a2"


def test_id_with_an_external_id_held_by_another_record_conflicts(client: TestClient) -> None:
    a = created(sync_business(client, {"external_id": "a", "name": "A"}))
    b = created(sync_business(client, {"external_id": "b", "name": "B"}))
    problem = assert_problem(
        sync_business(client, {"id": a["id"], "external_id": "b", "name": "Renamed"}), 409, "external_id_conflict"
    )
    assert problem["errors"][0]["path"] == "external_id"
    assert b["id"] in problem["detail"]
    assert client.get(f"/businesses/{a['id']}").json() == a
    assert client.get(f"/businesses/{b['id']}").json() == b


def test_omitted_external_id_is_kept_and_explicit_null_clears_it(client: TestClient) -> None:
    a = created(sync_business(client, {"external_id": "a", "name": "A"}))
    kept = created(sync_business(client, {"id": a["id"], "name": "A2"}), "replaced")
    assert kept["external_id"] == "a"
    cleared = created(sync_business(client, {"id": a["id"], "external_id": None, "name": "A2"}), "replaced")
    assert cleared["external_id"] is None
    assert client.get("/businesses", params={"external_id": "a"}).json()["data"] == []


def test_unknown_id_is_not_found_and_creates_nothing(client: TestClient, partner: PartnerKey) -> None:
    problem = assert_problem(
        sync_business(client, {"id": "biz_00000000000000000000000000", "external_id": "new", "name": "N"}),
        404,
        "not_found",
    )
    assert problem["errors"][0]["path"] == "id"
    assert count("businesses", "partner_id", partner.partner_id) == 0


@pytest.mark.parametrize("payload", [{"name": "N"}, {"external_id": None, "name": "N"}])
def test_neither_id_nor_external_id_is_missing_identifier(client: TestClient, payload: dict[str, Any]) -> None:
    assert_problem(sync_business(client, payload), 422, "missing_identifier")


def test_customer_external_ids_are_scoped_to_their_business(client: TestClient, business: dict[str, Any]) -> None:
    other = created(sync_business(client, {"external_id": "biz-2", "name": "Other"}))
    first = created(sync_customer(client, business["id"], {"external_id": "c-1", "full_name": "Ann"}))
    second = created(sync_customer(client, other["id"], {"external_id": "c-1", "full_name": "Bob"}))
    assert first["id"] != second["id"]
    # A customer id of another business is out of the path's scope.
    assert_problem(sync_customer(client, other["id"], {"id": first["id"]}), 404, "not_found")
    assert client.get(f"/customers/{first['id']}").json() == first


def test_customer_sync_on_an_unknown_business_is_not_found(client: TestClient) -> None:
    assert_problem(sync_customer(client, "biz_00000000000000000000000000", {"external_id": "c"}), 404, "not_found")


# --- rule 5: email addresses ---------------------------------------------------------------------------------


def test_email_address_taken_case_insensitively(client: TestClient, business: dict[str, Any]) -> None:
    ann = created(sync_customer(client, business["id"], {"external_id": "c-1", "email_address": "ann@example.com"}))
    problem = assert_problem(
        sync_customer(client, business["id"], {"external_id": "c-2", "email_address": "ANN@Example.COM"}),
        409,
        "email_address_taken",
    )
    assert problem["errors"][0]["path"] == "email_address"
    assert count("customers", "business_id", business["id"]) == 1
    # The holder itself may change the spelling of its own address.
    respelled = created(
        sync_customer(client, business["id"], {"id": ann["id"], "email_address": "Ann@Example.com"}), "replaced"
    )
    assert respelled["email_address"] == "Ann@Example.com"


def test_email_address_is_free_once_its_holder_lets_it_go(client: TestClient, business: dict[str, Any]) -> None:
    ann = created(sync_customer(client, business["id"], {"external_id": "c-1", "email_address": "ann@example.com"}))
    created(sync_customer(client, business["id"], {"id": ann["id"]}), "replaced")
    bob = created(sync_customer(client, business["id"], {"external_id": "c-2", "email_address": "ANN@example.com"}))
    assert bob["email_address"] == "ANN@example.com"


# --- read-only fields ----------------------------------------------------------------------------------------


def test_a_business_read_from_the_api_can_be_sent_back(client: TestClient) -> None:
    first = created(sync_business(client, {"external_id": "b-1", "name": "Bakery", "metadata": {"k": "v"}}))
    read = client.get(f"/businesses/{first['id']}").json()
    assert created(sync_business(client, read), "unchanged") == read
    # Read-only values are ignored, whatever they say.
    read.update(created_at="2001-01-01T00:00:00Z", updated_at="garbage", object="something")
    assert created(sync_business(client, read), "unchanged") == first


def test_a_customer_read_from_the_api_can_be_sent_back(client: TestClient, business: dict[str, Any]) -> None:
    first = created(sync_customer(client, business["id"], {"external_id": "c-1", "email_address": "a@example.com"}))
    read = client.get(f"/customers/{first['id']}").json()
    assert created(sync_customer(client, business["id"], read), "unchanged") == read
    other = created(sync_business(client, {"external_id": "biz-2", "name": "Other"}))
    read.update(business_id=other["id"], unsubscribed="campaign")
    assert created(sync_customer(client, business["id"], read), "unchanged") == first


def test_sync_never_changes_unsubscribed(client: TestClient, business: dict[str, Any]) -> None:
    first = created(sync_customer(client, business["id"], {"external_id": "c-1", "full_name": "Ann"}))
    with session_scope() as session:
        session.execute(text("UPDATE customers SET unsubscribed = 'campaign' WHERE id = :id"), {"id": first["id"]})
    body = created(
        sync_customer(client, business["id"], {"external_id": "c-1", "full_name": "Anne", "unsubscribed": None}),
        "replaced",
    )
    assert body["unsubscribed"] == "campaign"
    assert client.get(f"/customers/{first['id']}").json()["unsubscribed"] == "campaign"


# --- validation ----------------------------------------------------------------------------------------------

LONG = "x" * 256


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"external_id": "b", "name": "a\u0000b"}, [("name", "nul_character")]),
        ({"external_id": "b\u0000", "name": "N"}, [("external_id", "nul_character")]),
        ({"id": "biz_\u0000", "name": "N"}, [("id", "nul_character")]),
        ({"external_id": "b", "name": "N", "metadata": {"k": "v\u0000"}}, [("metadata.k", "nul_character")]),
        ({"external_id": "b", "name": "N", "metadata": {"k\u0000": 1}}, [("metadata.k\\u0000", "nul_character")]),
        ({"external_id": "b", "name": LONG}, [("name", "too_long")]),
        ({"external_id": LONG, "name": "N"}, [("external_id", "too_long")]),
        ({"external_id": "", "name": "N"}, [("external_id", "too_short")]),
        ({"external_id": "b", "name": ""}, [("name", "too_short")]),
        ({"external_id": "b"}, [("name", "required")]),
        ({"external_id": "b", "name": 5}, [("name", "invalid_type")]),
        ({"external_id": "b", "name": "N", "metadata": [1]}, [("metadata", "invalid_type")]),
        ({"external_id": "b", "name": "N", "metadata": {"k": "x" * 16_400}}, [("metadata", "metadata_too_large")]),
        ({"external_id": LONG}, [("external_id", "too_long"), ("name", "required")]),
    ],
)
def test_invalid_business_is_422_naming_each_field(
    client: TestClient, partner: PartnerKey, payload: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    problem = assert_problem(sync_business(client, payload), 422, "validation_error")
    assert sorted((e["path"], e["code"]) for e in problem["errors"]) == expected
    assert all(set(e) == {"path", "code", "message"} and e["message"] for e in problem["errors"])
    assert count("businesses", "partner_id", partner.partner_id) == 0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"email_address": "not-an-email"}, [("email_address", "invalid_email")]),
        ({"email_address": "a@b"}, [("email_address", "invalid_email")]),
        ({"email_address": "a" * 243 + "@example.com"}, [("email_address", "invalid_email")]),
        ({"phone_number": "call me"}, [("phone_number", "invalid_phone")]),
        ({"phone_number": "12"}, [("phone_number", "invalid_phone")]),
        ({"phone_number": "1" * 33}, [("phone_number", "invalid_phone")]),
        ({"full_name": LONG}, [("full_name", "too_long")]),
        ({"full_name": "A\u0000"}, [("full_name", "nul_character")]),
        (
            {"email_address": "nope", "phone_number": "x"},
            [("email_address", "invalid_email"), ("phone_number", "invalid_phone")],
        ),
    ],
)
def test_invalid_customer_is_422_naming_each_field(
    client: TestClient, business: dict[str, Any], payload: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    response = sync_customer(client, business["id"], {"external_id": "c", **payload})
    problem = assert_problem(response, 422, "validation_error")
    assert sorted((e["path"], e["code"]) for e in problem["errors"]) == expected
    assert count("customers", "business_id", business["id"]) == 0


def test_longest_valid_values_are_accepted(client: TestClient, business: dict[str, Any]) -> None:
    email = "a" * 242 + "@example.com"  # 254 characters
    metadata = {"k": "x" * (16 * 1024 - len('{"k":""}'))}  # exactly 16 KiB serialized
    body = created(
        sync_customer(
            client,
            business["id"],
            {"external_id": "x" * 255, "email_address": email, "phone_number": "1" * 32, "metadata": metadata},
        )
    )
    assert (body["email_address"], body["metadata"]) == (email, metadata)


def test_unknown_field_is_422_and_blanks_nothing(client: TestClient) -> None:
    first = created(sync_business(client, {"external_id": "b-1", "name": "Bakery", "metadata": {"k": 1}}))
    response = sync_business(client, {"external_id": "b-1", "nmae": "Typo", "name": "B"})
    problem = assert_problem(response, 422, "unknown_field")
    assert problem["errors"] == [{"path": "nmae", "code": "unknown_field", "message": problem["errors"][0]["message"]}]
    assert client.get(f"/businesses/{first['id']}").json() == first


def test_unsubscribed_is_unknown_on_a_business(client: TestClient) -> None:
    assert_problem(sync_business(client, {"external_id": "b", "name": "N", "unsubscribed": None}), 422, "unknown_field")


def test_large_numbers_in_metadata_round_trip(client: TestClient) -> None:
    # jsonb stores 1e20 as the integer 100000000000000000000; reading it back must not break the record.
    body = created(sync_business(client, {"external_id": "b", "name": "N", "metadata": {"big": 1e20, "n": 2**63 - 1}}))
    assert body["metadata"] == {"big": 1e20, "n": 2**63 - 1}
    assert client.get(f"/businesses/{body['id']}").json()["metadata"] == {"big": 1e20, "n": 2**63 - 1}
    raw = b'{"external_id": "b", "name": "N", "metadata": {"n": 9223372036854775807, "big": 1e20}}'
    response = client.post("/sync/businesses", content=raw, headers={"content-type": "application/json"})
    assert created(response, "unchanged")["metadata"] == {"big": 1e20, "n": 2**63 - 1}
    # The integer 10**20 is not 1e20: it is past 64 bits, refused rather than stored as a float (SPEC §7).
    raw = b'{"external_id": "b", "name": "N", "metadata": {"big": 100000000000000000000}}'
    response = client.post("/sync/businesses", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["code"] for e in response.json()["errors"]] == ["invalid_number"]


# --- the body itself -----------------------------------------------------------------------------------------


def test_malformed_json_is_400_naming_line_and_column(client: TestClient) -> None:
    response = client.post(
        "/sync/businesses", content=b'{"name": "x",\n  "external_id": }', headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 400, "malformed_body")
    assert "line 2 column 18" in problem["detail"]


def test_empty_body_is_400(client: TestClient) -> None:
    response = client.post("/sync/businesses", content=b"", headers={"content-type": "application/json"})
    assert_problem(response, 400, "malformed_body")


@pytest.mark.parametrize("body", [b'[{"external_id": "b", "name": "N"}]', b'"text"', b"5", b"null"])
def test_a_body_that_is_not_an_object_is_422(client: TestClient, body: bytes) -> None:
    response = client.post("/sync/businesses", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 422, "invalid_body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(client: TestClient, partner: PartnerKey, content_type: str) -> None:
    response = client.post(
        "/sync/businesses", content=b'{"external_id": "b", "name": "N"}', headers={"content-type": content_type}
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert count("businesses", "partner_id", partner.partner_id) == 0


def test_json_with_a_charset_parameter_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/sync/businesses",
        content=b'{"external_id": "b", "name": "N"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    created(response)


# --- rule 7: superseded --------------------------------------------------------------------------------------


def test_a_record_a_newer_write_reached_is_superseded(client: TestClient) -> None:
    first = created(sync_business(client, {"external_id": "b-1", "name": "Bakery"}))
    with session_scope() as session:
        session.execute(text("UPDATE businesses SET last_seq = 9e15 WHERE id = :id"), {"id": first["id"]})
    body = created(sync_business(client, {"external_id": "b-1", "name": "Older write"}), "superseded")
    assert body == first
    assert client.get(f"/businesses/{first['id']}").json() == first


def test_a_customer_a_newer_write_reached_is_superseded(client: TestClient, business: dict[str, Any]) -> None:
    first = created(sync_customer(client, business["id"], {"external_id": "c-1", "full_name": "Ann"}))
    with session_scope() as session:
        session.execute(text("UPDATE customers SET last_seq = 9e15 WHERE id = :id"), {"id": first["id"]})
    body = created(sync_customer(client, business["id"], {"id": first["id"], "full_name": "Bob"}), "superseded")
    assert body == first
    assert stored("customers", first["id"])["full_name"] == "Ann"


# --- Idempotency-Key -----------------------------------------------------------------------------------------


def test_same_key_and_request_replays_the_first_response(client: TestClient, partner: PartnerKey) -> None:
    headers = {"Idempotency-Key": "create-b-1"}
    first = sync_business(client, {"external_id": "b-1", "name": "Bakery"}, headers=headers)
    assert first.headers["Sync-Outcome"] == "created"
    assert "Idempotent-Replayed" not in first.headers
    replay = sync_business(client, {"external_id": "b-1", "name": "Bakery"}, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    # The first answer, not what a new sync would say ("unchanged").
    assert replay.headers["Sync-Outcome"] == "created"
    assert replay.content == first.content
    assert count("businesses", "partner_id", partner.partner_id) == 1


def test_an_error_response_is_replayed_too(client: TestClient) -> None:
    a = created(sync_business(client, {"external_id": "a", "name": "A"}))
    b = created(sync_business(client, {"external_id": "b", "name": "B"}))
    headers = {"Idempotency-Key": "take-b"}
    payload = {"id": a["id"], "external_id": "b", "name": "A"}
    first = sync_business(client, payload, headers=headers)
    assert_problem(first, 409, "external_id_conflict")
    # Once b is free, a new request would succeed; the same key still answers the first response.
    created(sync_business(client, {"id": b["id"], "external_id": None, "name": "B"}), "replaced")
    replay = sync_business(client, payload, headers=headers)
    assert_problem(replay, 409, "external_id_conflict")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert client.get(f"/businesses/{a['id']}").json()["external_id"] == "a"


def test_same_key_with_another_request_is_422(client: TestClient, business: dict[str, Any]) -> None:
    headers = {"Idempotency-Key": "k-1"}
    created(sync_business(client, {"external_id": "b-2", "name": "B"}, headers=headers))
    assert_problem(
        sync_business(client, {"external_id": "b-3", "name": "B"}, headers=headers), 422, "idempotency_key_reused"
    )
    assert client.get("/businesses", params={"external_id": "b-3"}).json()["data"] == []
    # Same body on another path is another request too.
    assert_problem(
        sync_customer(client, business["id"], {"external_id": "b-2", "name": "B"}, headers=headers),
        422,
        "idempotency_key_reused",
    )


def test_keys_are_scoped_to_the_partner(client: TestClient, other_partner: PartnerKey) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    mine = created(sync_business(client, {"external_id": "b-1", "name": "Bakery"}, headers=headers))
    theirs = sync_business(client, {"external_id": "b-1", "name": "Bakery"}, headers=headers, auth=other_partner.auth)
    assert created(theirs)["id"] != mine["id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_key_length_is_limited_to_255(client: TestClient) -> None:
    created(sync_business(client, {"external_id": "b-1", "name": "N"}, headers={"Idempotency-Key": "k" * 255}))
    response = sync_business(client, {"external_id": "b-2", "name": "N"}, headers={"Idempotency-Key": "k" * 256})
    assert_problem(response, 400, "invalid_idempotency_key")
    assert client.get("/businesses", params={"external_id": "b-2"}).json()["data"] == []


def test_a_key_still_in_flight_is_409(partner: PartnerKey) -> None:
    fingerprint = idempotency.request_fingerprint("POST", "/sync/businesses?", b"{}")
    first, second = new_session(), new_session()
    try:
        assert idempotency.claim(first, partner_id=partner.partner_id, key="k", fingerprint=fingerprint) is None
        with pytest.raises(DomainError) as raised:
            idempotency.claim(second, partner_id=partner.partner_id, key="k", fingerprint=fingerprint)
        assert (raised.value.status, raised.value.code) == (409, "idempotency_key_in_use")
        assert raised.value.headers.get("Retry-After")
    finally:
        first.rollback()
        second.rollback()
        first.close()
        second.close()


# --- problem documents of the routing layer ------------------------------------------------------------------


def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/no/such/route"), 404, "not_found")


def test_wrong_method_is_a_405_problem_with_allow(client: TestClient) -> None:
    response = client.get("/sync/businesses")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"
