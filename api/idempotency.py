"""Idempotency-Key handling for every POST route."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.body import SpooledBody
from api.problems import problem_response
from core.errors import DomainError
from core.partners import idempotency
from core.partners.service import require_live_key

# Headers worth replaying; hop-by-hop and length headers are recomputed.
_REPLAYED_HEADERS = {
    "content-type",
    "location",
    "retry-after",
    "sync-outcome",
    "preference-applied",
    "deprecation",
    "link",
}


def idempotent(
    request: Request, session: Session, partner_id: str, body: bytes | SpooledBody, handle: Callable[[], Response]
) -> Response:
    """Run `handle` once per Idempotency-Key; replay its response (errors included) for the same request.

    The stored response commits with the work itself, so a crash never leaves a key that claims work that was
    rolled back; a 5xx is never stored.
    """
    # Every write holds its API key live for its transaction: none is applied once the key's revocation commits.
    require_live_key(session, key_id=request.state.key_id)
    key = request.headers.get("idempotency-key")
    if key is None:
        return handle()
    fingerprint = (
        body.fingerprint
        if isinstance(body, SpooledBody)
        else idempotency.request_fingerprint(request.method, request.url.path + "?" + request.url.query, body)
    )
    stored = idempotency.claim(session, partner_id=partner_id, key=key, fingerprint=fingerprint)
    if stored is not None:
        response = Response(stored.body, status_code=stored.status, headers=stored.headers)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        response = handle()
    except DomainError as error:
        if error.status >= 500:
            raise
        response = problem_response(error)
    assert isinstance(response.body, bytes)
    headers = {k: v for k, v in response.headers.items() if k.lower() in _REPLAYED_HEADERS}
    idempotency.store(
        session,
        partner_id=partner_id,
        key=key,
        method=request.method,
        path=request.url.path,
        fingerprint=fingerprint,
        response=idempotency.StoredResponse(response.status_code, headers, response.body),
    )
    return response
