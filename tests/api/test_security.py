"""Security: every route scoped to the caller's partner, credentials on every route but three, secrets kept safe.

The route walks read `api.app.app.routes` (tests/hostile.py), so a route added later is covered without touching
this file; a path parameter the walk does not know fails it, asking for an id to substitute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import app
from core import logs
from core.db import session_scope
from core.partners import service as partners
from tests.conftest import PartnerKey, make_partner
from tests.hostile import Endpoint, endpoints

PUBLIC = {"/healthz", "/readyz", "/metrics"}
# The API reference (FastAPI's own pages): public like any API documentation, and it holds no partner data.
DOCUMENTATION = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _basic(key_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()}


def _call(client: TestClient, endpoint: Endpoint, url: str, headers: dict[str, str]) -> Any:
    body = {"name": "Intruder", "external_id": "intruder", "customers": [{"external_id": "x"}], "url": "https://x.y"}
    kwargs: dict[str, Any] = {"headers": headers}
    if endpoint.method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = body
    return client.request(endpoint.method, url, **kwargs)


@pytest.fixture(scope="module")
def anonymous() -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def partner_a_objects(anonymous: TestClient) -> dict[str, Any]:
    """Partner A with a business, a customer and a job, and the ids to put in each path parameter."""
    key = make_partner("partner A")
    auth = _basic(key.key_id, key.secret)
    business = anonymous.post("/sync/businesses", json={"external_id": "a-biz", "name": "A"}, headers=auth).json()
    customer = anonymous.post(
        f"/sync/businesses/{business['id']}/customers",
        json={"external_id": "a-cus", "email_address": "a@example.com", "full_name": "Ann"},
        headers=auth,
    ).json()
    job = anonymous.post(
        f"/sync/businesses/{business['id']}/customers/batch", json={"customers": [{"external_id": "a-2"}]}, headers=auth
    ).json()
    assert job["object"] == "sync_job"
    return {
        "key": key,
        "auth": auth,
        "business": business,
        "customer": customer,
        "job": job,
        "ids": {"business_id": business["id"], "customer_id": customer["id"], "job_id": job["id"]},
    }


def test_the_walk_finds_every_kind_of_route() -> None:
    found = {(e.method, e.path) for e in endpoints()}
    for expected in [
        ("POST", "/sync/businesses"),
        ("POST", "/sync/businesses/{business_id}/customers/batch"),
        ("GET", "/jobs/{job_id}/results"),
        ("POST", "/jobs/{job_id}/cancel"),
        ("POST", "/businesses/{business_id}/customers/batch_update"),
        ("GET", "/customers/{customer_id}"),
        ("GET", "/healthz"),
    ]:
        assert expected in found


def test_no_route_but_health_readiness_and_metrics_answers_without_credentials(
    anonymous: TestClient, partner_a_objects: dict[str, Any]
) -> None:
    key: PartnerKey = partner_a_objects["key"]
    wrong = [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        _basic(key.key_id, ""),
        _basic(key.key_id, key.secret + "x"),
        _basic("key_00000000000000000000000000", key.secret),
    ]
    open_routes = set()
    for endpoint in endpoints():
        url = endpoint.url(partner_a_objects["ids"])
        for headers in wrong:
            response = _call(anonymous, endpoint, url, headers)
            if response.status_code != 401:
                open_routes.add(endpoint.path)
                continue
            assert response.headers["WWW-Authenticate"].startswith("Basic"), endpoint
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert response.json()["code"] == "unauthorized"
    assert open_routes == PUBLIC | DOCUMENTATION


def test_another_partners_ids_answer_404_on_every_route(
    anonymous: TestClient, partner_a_objects: dict[str, Any]
) -> None:
    b = make_partner("partner B")
    b_auth = _basic(b.key_id, b.secret)
    checked = []
    for endpoint in endpoints():
        if not endpoint.params:
            continue
        response = _call(anonymous, endpoint, endpoint.url(partner_a_objects["ids"]), b_auth)
        assert response.status_code == 404, (endpoint, response.status_code, response.text)
        assert response.json()["code"] == "not_found"
        # Answered exactly like an id that does not exist.
        missing = {name: value[:4] + "0" * (len(value) - 4) for name, value in partner_a_objects["ids"].items()}
        assert _call(anonymous, endpoint, endpoint.url(missing), b_auth).json() == response.json()
        checked.append(endpoint)
    assert len(checked) >= 10

    # Ids in bodies are scoped too: B cannot reach A's records by naming them.
    a = partner_a_objects
    response = anonymous.post("/sync/businesses", json={"id": a["business"]["id"], "name": "Hijack"}, headers=b_auth)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    own = anonymous.post("/sync/businesses", json={"external_id": "b-biz", "name": "B"}, headers=b_auth).json()
    response = anonymous.post(
        f"/sync/businesses/{own['id']}/customers", json={"id": a["customer"]["id"]}, headers=b_auth
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    response = anonymous.post(
        f"/businesses/{own['id']}/customers/batch_update",
        json={"customers": [{"id": a["customer"]["id"], "full_name": "Hijack"}]},
        headers=b_auth,
    )
    assert response.status_code in (404, 422)
    assert a["customer"]["id"] in response.text

    # Lists show B nothing of A's, even filtered by A's keys.
    assert anonymous.get("/businesses", params={"external_id": "a-biz"}, headers=b_auth).json()["data"] == []
    assert a["job"]["id"] not in anonymous.get("/jobs", headers=b_auth).text
    assert a["business"]["id"] not in anonymous.get("/businesses", headers=b_auth).text

    # And A's objects are exactly as they were.
    a_auth = a["auth"]
    assert anonymous.get(f"/businesses/{a['business']['id']}", headers=a_auth).json() == a["business"]
    assert anonymous.get(f"/customers/{a['customer']['id']}", headers=a_auth).json() == a["customer"]
    job = anonymous.get(f"/jobs/{a['job']['id']}", headers=a_auth).json()
    assert job["cancel_requested_at"] is None


def test_api_secrets_are_stored_only_as_hashes() -> None:
    key = make_partner("hashed")
    with session_scope() as session:
        row = session.execute(text("SELECT * FROM api_keys WHERE id = :k"), {"k": key.key_id}).mappings().one()
    stored = " ".join(str(value) for value in row.values())
    assert key.secret not in stored
    assert key.secret.removeprefix("sk_") not in stored
    assert row["secret_hash"] == hashlib.sha256(key.secret.encode()).hexdigest()


def test_secrets_are_compared_in_constant_time_even_for_unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_partner("timing")
    compared: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(partners, "_cache", {})
    with session_scope() as session:
        assert partners.authenticate(session, key_id=key.key_id, secret="sk_wrong") is None
        assert partners.authenticate(session, key_id="key_unknown", secret=key.secret) is None
        caller = partners.authenticate(session, key_id=key.key_id, secret=key.secret)
        assert caller is not None
        assert caller.partner_id == key.partner_id
    # Every check, the unknown key's included, goes through one digest comparison of equal-length hashes.
    assert len(compared) == 3
    assert all(len(a) == len(b) == 64 for a, b in compared)


def test_no_secret_or_authorization_header_reaches_the_logs(
    anonymous: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = make_partner("logged")
    good = _basic(key.key_id, key.secret)
    bad = _basic(key.key_id, key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B"))
    formatter = logs.JsonFormatter()
    with caplog.at_level(logging.DEBUG):
        business = anonymous.post("/sync/businesses", json={"external_id": "l", "name": "L"}, headers=good).json()
        anonymous.get(f"/businesses/{business['id']}", headers=good)
        anonymous.get("/businesses", headers=bad)
        anonymous.post("/sync/businesses", content=b"{not json", headers={**good, "Content-Type": "application/json"})
        anonymous.post(
            f"/sync/businesses/{business['id']}/customers/batch",
            json={"customers": [{"external_id": "x", "full_name": key.secret}]},
            headers={**good, "Idempotency-Key": "logged-1"},
        )
    lines = "\n".join(formatter.format(record) for record in caplog.records)
    assert "request" in lines  # the access log was captured
    for secret in (key.secret, good["Authorization"], bad["Authorization"], good["Authorization"].split()[1]):
        assert secret not in lines
