"""Reads (SPEC §4 "Reads"): single objects, and the paged lists with their filters."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_single_sync import created, sync_business, sync_customer
from tests.conftest import assert_problem


@pytest.fixture
def businesses(client: TestClient) -> list[dict[str, Any]]:
    """Five businesses, in creation order."""
    return [created(sync_business(client, {"external_id": f"b-{i}", "name": f"Business {i}"})) for i in range(5)]


@pytest.fixture
def customers(client: TestClient, businesses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Three customers of the first business, in creation order."""
    return [
        created(sync_customer(client, businesses[0]["id"], {"external_id": f"c-{i}", "email_address": email}))
        for i, email in enumerate(["ann@example.com", "Bob@Example.com", "cat@example.com"])
    ]


def _pages(client: TestClient, path: str, limit: int) -> list[dict[str, Any]]:
    pages = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = client.get(path, params=params).json()
        pages.append(page)
        if not page["has_more"]:
            return pages
        params["starting_after"] = page["next_cursor"]


def test_get_business_and_customer(client: TestClient, customers: list[dict[str, Any]]) -> None:
    customer = customers[0]
    response = client.get(f"/customers/{customer['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == customer
    business = client.get(f"/businesses/{customer['business_id']}").json()
    assert (business["object"], business["external_id"]) == ("business", "b-0")


def test_unknown_ids_are_404_problems(client: TestClient) -> None:
    assert_problem(client.get("/businesses/biz_00000000000000000000000000"), 404, "not_found")
    assert_problem(client.get("/customers/cus_00000000000000000000000000"), 404, "not_found")
    assert_problem(client.get("/businesses/biz_00000000000000000000000000/customers"), 404, "not_found")
    # An id no record can have (PostgreSQL text cannot hold NUL) is simply not found, not a crash.
    assert_problem(client.get("/businesses/biz_%00"), 404, "not_found")
    assert_problem(client.get("/customers/cus_%00"), 404, "not_found")
    assert_problem(client.post("/sync/businesses/biz_%00/customers", json={"external_id": "c"}), 404, "not_found")


def test_businesses_are_listed_oldest_first_in_pages(client: TestClient, businesses: list[dict[str, Any]]) -> None:
    everything = client.get("/businesses").json()
    assert everything == {"object": "list", "data": businesses, "has_more": False, "next_cursor": None}

    pages = _pages(client, "/businesses", limit=2)
    assert [[b["external_id"] for b in page["data"]] for page in pages] == [["b-0", "b-1"], ["b-2", "b-3"], ["b-4"]]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert pages[0]["next_cursor"] == businesses[1]["id"]
    assert pages[-1]["next_cursor"] is None


def test_a_replaced_record_keeps_its_place(client: TestClient, businesses: list[dict[str, Any]]) -> None:
    created(sync_business(client, {"external_id": "b-0", "name": "Renamed"}), "replaced")
    listed = client.get("/businesses").json()["data"]
    assert [b["id"] for b in listed] == [b["id"] for b in businesses]
    assert listed[0]["name"] == "Renamed"


def test_a_page_that_ends_exactly_at_the_end_has_no_more(client: TestClient, businesses: list[dict[str, Any]]) -> None:
    page = client.get("/businesses", params={"limit": 5}).json()
    assert (len(page["data"]), page["has_more"], page["next_cursor"]) == (5, False, None)
    after_last = client.get("/businesses", params={"starting_after": businesses[-1]["id"]}).json()
    assert (after_last["data"], after_last["has_more"]) == ([], False)


def test_customers_are_listed_oldest_first_in_pages(
    client: TestClient, businesses: list[dict[str, Any]], customers: list[dict[str, Any]]
) -> None:
    path = f"/businesses/{businesses[0]['id']}/customers"
    pages = _pages(client, path, limit=2)
    assert [c for page in pages for c in page["data"]] == customers
    assert [page["has_more"] for page in pages] == [True, False]
    # Another business's list holds only its own customers.
    assert client.get(f"/businesses/{businesses[1]['id']}/customers").json()["data"] == []


def test_filter_businesses_by_external_id(client: TestClient, businesses: list[dict[str, Any]]) -> None:
    assert client.get("/businesses", params={"external_id": "b-3"}).json()["data"] == [businesses[3]]
    assert client.get("/businesses", params={"external_id": "B-3"}).json()["data"] == []
    assert client.get("/businesses", params={"external_id": "nope"}).json()["data"] == []


def test_filter_customers_by_external_id_and_email_address(
    client: TestClient, businesses: list[dict[str, Any]], customers: list[dict[str, Any]]
) -> None:
    path = f"/businesses/{businesses[0]['id']}/customers"
    assert client.get(path, params={"external_id": "c-2"}).json()["data"] == [customers[2]]
    assert client.get(path, params={"email_address": "BOB@example.COM"}).json()["data"] == [customers[1]]
    assert client.get(path, params={"email_address": "ann@example.com", "external_id": "c-1"}).json()["data"] == []


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_limit_out_of_range_is_422(client: TestClient, limit: str) -> None:
    problem = assert_problem(client.get("/businesses", params={"limit": limit}), 422, "validation_error")
    assert [e["path"] for e in problem["errors"]] == ["limit"]


def test_limit_bounds_are_accepted(client: TestClient, businesses: list[dict[str, Any]]) -> None:
    assert len(client.get("/businesses", params={"limit": 1}).json()["data"]) == 1
    assert len(client.get("/businesses", params={"limit": 1000}).json()["data"]) == len(businesses)


@pytest.mark.parametrize("param", ["external_id", "starting_after"])
def test_nul_in_a_business_list_parameter_is_422(client: TestClient, param: str) -> None:
    problem = assert_problem(client.get("/businesses", params={param: "a\u0000b"}), 422, "validation_error")
    assert [e["path"] for e in problem["errors"]] == [param]


@pytest.mark.parametrize("param", ["external_id", "email_address", "starting_after"])
def test_nul_in_a_customer_list_parameter_is_422(
    client: TestClient, businesses: list[dict[str, Any]], param: str
) -> None:
    response = client.get(f"/businesses/{businesses[0]['id']}/customers", params={param: "a\u0000b"})
    problem = assert_problem(response, 422, "validation_error")
    assert [e["path"] for e in problem["errors"]] == [param]
