"""Record-level limits through the API on PostgreSQL (SPEC §2, §7): numbers, depth, bounded errors, messages."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from tests.conftest import assert_problem

JSON = {"Content-Type": "application/json"}


def post_raw(client: TestClient, url: str, body: bytes) -> Any:
    return client.post(url, content=body, headers=JSON)


def test_a_record_with_ten_thousand_unknown_fields_gets_a_small_bounded_422(client: TestClient) -> None:
    record = {"external_id": "b", "name": "N"} | {f"field_{i}": i for i in range(10_000)}
    response = client.post("/sync/businesses", json=record)
    problem = assert_problem(response, 422, "unknown_field")
    errors = problem["errors"]
    assert len(errors) == 21
    assert {e["code"] for e in errors[:20]} == {"unknown_field"}
    assert (errors[20]["code"], errors[20]["path"]) == ("too_many_errors", None)
    assert errors[20]["message"].startswith("and 9980 more errors")
    assert len(response.content) < 8192


def test_a_long_unknown_field_name_is_cut_in_its_path(client: TestClient) -> None:
    response = client.post("/sync/businesses", json={"external_id": "b", "name": "N", "x" * 50_000: 1})
    [error] = assert_problem(response, 422, "unknown_field")["errors"]
    assert error["path"] == "x" * 255 + "…"
    assert len(response.content) < 4096


def test_metadata_numbers_and_depth_are_checked_with_paths(client: TestClient) -> None:
    deep = b"[" * 20 + b"]" * 20
    body = (
        b'{"external_id": "b", "name": "N", "metadata": {"ok": 1.5, "deep": ' + deep + b', "list": [1, 2, '
        b'{"i": 9223372036854775808, "j": -9223372036854775809, "f": 1e400}], "n": 18446744073709551615}}'
    )
    problem = assert_problem(post_raw(client, "/sync/businesses", body), 422, "validation_error")
    assert [(e["code"], e["path"]) for e in problem["errors"]] == [
        ("metadata_too_deep", "metadata.deep" + ".0" * 15),
        ("invalid_number", "metadata.list.2.i"),
        ("invalid_number", "metadata.list.2.j"),
        ("invalid_number", "metadata.list.2.f"),
        ("invalid_number", "metadata.n"),
    ]
    assert client.get("/businesses").json()["data"] == []

    body = b'{"external_id": "b", "name": "N", "metadata": {"d": ' + b"[" * 15 + b"]" * 15 + b', "x": 1.5e-400}}'
    response = post_raw(client, "/sync/businesses", body)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["metadata"]["x"] == 0.0
    assert client.get(f"/businesses/{stored['id']}").json() == stored
    assert client.get("/businesses").json()["data"] == [stored]


def test_a_number_beyond_a_double_in_a_typed_field_is_a_422(client: TestClient) -> None:
    for body in (b'{"external_id": "b", "name": 1e400}', b'{"external_id": 123456789012345678901234, "name": "N"}'):
        problem = assert_problem(post_raw(client, "/sync/businesses", body), 422, "validation_error")
        assert [e["code"] for e in problem["errors"]] == ["invalid_type"]


def test_messages_name_one_business_or_customer(client: TestClient) -> None:
    """Not "businesse": the singular of a kind is spelled out, not cut from its plural."""
    missing = assert_problem(client.post("/sync/businesses", json={"id": "biz_nope", "name": "N"}), 404, "not_found")
    assert missing["detail"] == "no business with id 'biz_nope'"
    assert missing["errors"][0]["message"] == "no business with id 'biz_nope'"
    a = client.post("/sync/businesses", json={"external_id": "a", "name": "A"}).json()
    b = client.post("/sync/businesses", json={"external_id": "b", "name": "B"}).json()
    taken = client.post("/sync/businesses", json={"id": a["id"], "external_id": "b", "name": "A"})
    assert assert_problem(taken, 409, "external_id_conflict")["detail"] == (
        f"external_id 'b' already belongs to business {b['id']}"
    )
    url = f"/sync/businesses/{a['id']}/customers"
    customer = assert_problem(client.post(url, json={"id": "cus_nope"}), 404, "not_found")
    assert customer["detail"] == "no customer with id 'cus_nope'"

    legacy = client.post("/businesses", json={"id": "biz_x", "name": "N"})
    assert legacy.status_code == 422
    [message] = [e["message"] for e in legacy.json()["errors"] if e["code"] == "id_not_allowed"]
    assert message == "a create takes no id; update an existing business at its own path"
    mismatch = client.post(f"/businesses/{a['id']}", json={"id": "biz_other", "name": "New"})
    assert mismatch.json()["errors"][0]["message"] == f"the body names another business than {a['id']}"
    everything = orjson.dumps([missing, customer, legacy.json(), mismatch.json()])
    assert b"businesse " not in everything
