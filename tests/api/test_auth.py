"""Authentication (HTTP Basic with an API key) and partner isolation (SPEC §1)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.db import session_scope
from core.partners.service import create_key
from tests.api.test_single_sync import created, sync_business, sync_customer
from tests.conftest import PartnerKey, assert_problem

UNKNOWN_BUSINESS = "biz_00000000000000000000000000"
UNKNOWN_CUSTOMER = "cus_00000000000000000000000000"

# The read and single-sync endpoints, with `{b}` / `{c}` standing for a business and a customer id.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/businesses", None),
    ("GET", "/businesses/{b}", None),
    ("GET", "/businesses/{b}/customers", None),
    ("GET", "/customers/{c}", None),
    ("POST", "/sync/businesses", {"external_id": "x", "name": "N"}),
    ("POST", "/sync/businesses/{b}/customers", {"external_id": "x"}),
]


def _basic(value: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


def _assert_unauthorized(response: Any) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_no_credentials_is_401_with_basic_challenge(client: TestClient, method: str, path: str, body: Any) -> None:
    url = path.format(b=UNKNOWN_BUSINESS, c=UNKNOWN_CUSTOMER)
    # `client` signs with valid credentials by default; `auth=None` sends none.
    _assert_unauthorized(client.request(method, url, json=body, auth=None))


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer sk_abc"}, id="not basic"),
        pytest.param({"Authorization": "Basic !!!not-base64!!!"}, id="bad base64"),
        pytest.param(_basic("no-colon"), id="no colon"),
        pytest.param(_basic(":secret"), id="no key id"),
        pytest.param(_basic("key_unknown:secret"), id="unknown key"),
        pytest.param({"Authorization": "Basic"}, id="empty"),
        pytest.param(_basic("key_abc\0:secret"), id="NUL in the key id"),
        pytest.param(_basic("key_abc:sec\0ret"), id="NUL in the secret"),
        pytest.param({"Authorization": "Basic " + base64.b64encode(b"key_\xff\xfe:secret").decode()}, id="not UTF-8"),
        pytest.param({"Authorization": b"Basic a2V5X2FiYzpzZWNyZXQ=\xe9"}, id="raw bytes that are not ASCII"),
    ],
)
def test_malformed_or_unknown_credentials_are_401(client: TestClient, headers: dict[str, Any]) -> None:
    _assert_unauthorized(client.get("/businesses", headers=headers, auth=None))


def test_wrong_secret_is_401(app_client: TestClient, partner: PartnerKey) -> None:
    _assert_unauthorized(app_client.get("/businesses", auth=(partner.key_id, partner.secret + "x")))
    # Another key's secret does not open this key either.
    with session_scope() as session:
        second = create_key(session, partner_id=partner.partner_id)
    _assert_unauthorized(app_client.get("/businesses", auth=(partner.key_id, second.secret)))
    assert app_client.get("/businesses", auth=(second.key_id, second.secret)).status_code == 200


def test_a_revoked_key_is_401(app_client: TestClient, partner: PartnerKey) -> None:
    with session_scope() as session:
        key = create_key(session, partner_id=partner.partner_id)
        session.execute(text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": key.key_id})
    _assert_unauthorized(app_client.get("/businesses", auth=(key.key_id, key.secret)))


def test_an_unauthorized_sync_writes_nothing(app_client: TestClient, partner: PartnerKey) -> None:
    response = app_client.post(
        "/sync/businesses", json={"external_id": "x", "name": "N"}, auth=(partner.key_id, "wrong")
    )
    _assert_unauthorized(response)
    assert app_client.get("/businesses", auth=partner.auth).json()["data"] == []


def test_health_needs_no_credentials(app_client: TestClient) -> None:
    assert app_client.get("/healthz", auth=None).status_code == 200


# --- isolation -----------------------------------------------------------------------------------------------


@pytest.fixture
def theirs(app_client: TestClient, other_partner: PartnerKey) -> dict[str, Any]:
    """A business and a customer of another partner, both with external_id "shared"."""
    business = created(
        app_client.post("/sync/businesses", json={"external_id": "shared", "name": "Theirs"}, auth=other_partner.auth)
    )
    customer = created(
        app_client.post(
            f"/sync/businesses/{business['id']}/customers",
            json={"external_id": "shared", "email_address": "them@example.com"},
            auth=other_partner.auth,
        )
    )
    return {"business": business, "customer": customer}


@pytest.mark.parametrize(("method", "path", "body"), [e for e in ENDPOINTS if "{" in e[1]])
def test_another_partners_ids_answer_exactly_like_missing_ones(
    client: TestClient, theirs: dict[str, Any], method: str, path: str, body: Any
) -> None:
    foreign = client.request(method, path.format(b=theirs["business"]["id"], c=theirs["customer"]["id"]), json=body)
    missing = client.request(method, path.format(b=UNKNOWN_BUSINESS, c=UNKNOWN_CUSTOMER), json=body)
    assert_problem(foreign, 404, "not_found")
    assert foreign.json() == missing.json()


def test_syncing_another_partners_ids_is_not_found(client: TestClient, theirs: dict[str, Any]) -> None:
    assert_problem(sync_business(client, {"id": theirs["business"]["id"], "name": "Mine now"}), 404, "not_found")
    mine = created(sync_business(client, {"external_id": "mine", "name": "Mine"}))
    assert_problem(sync_customer(client, mine["id"], {"id": theirs["customer"]["id"]}), 404, "not_found")
    assert_problem(
        client.post(f"/sync/businesses/{theirs['business']['id']}/customers/batch", json={"customers": [{}]}),
        404,
        "not_found",
    )


def test_another_partners_records_stay_as_they_were(
    client: TestClient, other_partner: PartnerKey, theirs: dict[str, Any]
) -> None:
    # The same external_id and email address are free in this partner's scope: new records, theirs untouched.
    mine = created(sync_business(client, {"external_id": "shared", "name": "Mine"}))
    assert mine["id"] != theirs["business"]["id"]
    same_keys = {"external_id": "shared", "email_address": "them@example.com"}
    customer = created(sync_customer(client, mine["id"], same_keys))
    assert customer["id"] != theirs["customer"]["id"]
    assert client.get("/businesses").json()["data"] == [mine]
    assert client.get("/businesses", params={"external_id": "shared"}).json()["data"] == [mine]
    their_view = client.get(f"/businesses/{theirs['business']['id']}", auth=other_partner.auth).json()
    assert their_view == theirs["business"]
    their_customer = client.get(f"/customers/{theirs['customer']['id']}", auth=other_partner.auth).json()
    assert their_customer == theirs["customer"]
