"""Schemathesis against the app's OpenAPI document: no answer is a 5xx, and every answer matches the document.

Generated requests are signed as a test partner; every other one targets that partner's real business, customer
and job (the rest random ids), so operations run against real objects as well as missing ones.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import app
from tests.conftest import PartnerKey, make_partner

# NDJSON batch bodies are generated as text (one line per record; most random lines are not JSON).
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
_turn = itertools.count()


@pytest.fixture(scope="module")
def fuzz_partner() -> dict[str, Any]:
    """A partner with a business, a customer and a job, and the Authorization header that signs as it."""
    key: PartnerKey = make_partner("schemathesis")
    with TestClient(app) as client:
        client.auth = key.auth
        business = client.post("/sync/businesses", json={"external_id": "fuzz", "name": "Fuzz"}).json()
        customer = client.post(
            f"/sync/businesses/{business['id']}/customers", json={"external_id": "c", "email_address": "c@example.com"}
        ).json()
        job = client.post(
            f"/sync/businesses/{business['id']}/customers/batch", json={"customers": [{"external_id": "j"}]}
        ).json()
    token = base64.b64encode(f"{key.key_id}:{key.secret}".encode()).decode()
    return {
        "headers": {"Authorization": f"Basic {token}"},
        "ids": {"business_id": business["id"], "customer_id": customer["id"], "job_id": job["id"]},
    }


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_answers_are_never_5xx_and_match_the_document(
    case: schemathesis.Case[Any], fuzz_partner: dict[str, Any]
) -> None:
    if case.path_parameters and next(_turn) % 2:
        ids = fuzz_partner["ids"]
        case.path_parameters = {name: ids.get(name, value) for name, value in case.path_parameters.items()}
    if case.headers and "Prefer" in case.headers:
        # No worker runs here: a job never finishes, so `wait=N` would hold the answer the whole N seconds.
        case.headers["Prefer"] = "wait=1"
    case.call_and_validate(headers=fuzz_partner["headers"], checks=CHECKS)
