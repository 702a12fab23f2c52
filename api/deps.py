"""Request dependencies: the database session and the authenticated partner (bodies: api/body.py)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import ratelimit
from core import logs
from core.db import commit, new_session, roll_back, session_scope
from core.errors import DomainError, FieldError
from core.partners import budgets
from core.partners.service import Caller, authenticate, cached_caller


async def get_session() -> AsyncIterator[Session]:
    """The request's session: committed when the route returns, before the response is sent.

    Opening a session does no I/O, so it happens in the request's task; ending one does (COMMIT, giving the
    connection back), so that runs in the thread pool, unless the route committed already (`GET /jobs/{id}` does,
    in its own thread): every trip through the pool costs the request CPU. The single-record sync routes take no
    session from here: they work on a connection of their own, or a session they end themselves (api/routes/sync.py).
    """
    session = new_session()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(roll_back, session)
        raise
    if session.in_transaction() or session.info.get("after_commit"):
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(commit, session)
    else:
        session.close()


DbSession = Annotated[Session, Depends(get_session, scope="function")]


def _unauthorized(detail: str) -> DomainError:
    return DomainError("unauthorized", detail, 401, headers={"WWW-Authenticate": 'Basic realm="pfsync"'})


async def current_partner(request: Request) -> str:
    """The partner whose API key (HTTP Basic: key id and secret) signed the request, also put in the log context;
    the request is taken from its budget (429 when spent, api/ratelimit.py).

    Checked before the body is read, in a session of its own that gives its connection back at once: a request
    holds no connection while its body arrives (SPEC §7). Async: a key checked in the last seconds is answered
    from memory without a trip through the thread pool, and the log context set here, in the request's own task,
    is inherited by the route's thread.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authenticate with HTTP Basic: your API key id as username, its secret as password.")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("Only HTTP Basic authentication is supported.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # not base64 (or not ASCII at all), or not UTF-8
        raise _unauthorized("Malformed Basic credentials.") from None
    key_id, sep, secret = decoded.partition(":")
    if not sep or not key_id or not secret or "\x00" in decoded:
        raise _unauthorized("Malformed Basic credentials.")
    caller = cached_caller(key_id=key_id, secret=secret)
    if caller is None:
        caller = await run_in_threadpool(_authenticate, key_id, secret)
    if caller is None:
        raise _unauthorized("Unknown API key or wrong secret.")
    request.state.partner_id = caller.partner_id
    request.state.key_id = key_id
    logs.partner_id.set(caller.partner_id)
    # Only authenticated requests spend the budget; a refused one is answered here, before any body is read.
    ratelimit.check(request.scope, await budgets.spend(caller.partner_id, caller.budget))
    return caller.partner_id


def _authenticate(key_id: str, secret: str) -> Caller | None:
    with session_scope() as session:
        return authenticate(session, key_id=key_id, secret=secret)


PartnerId = Annotated[str, Depends(current_partner)]


def _dry_run_spellings(request: Request) -> set[str]:
    """The query parameters that look like `dry_run` however they are spelled (`dryRun`, `DRY-RUN`, …)."""
    return {name for name in request.query_params if name.replace("-", "").replace("_", "").lower() == "dryrun"}


async def check_dry_run(request: Request) -> None:
    """`one_dry_run` as a dependency (in the event loop: it does no I/O)."""
    one_dry_run(request)


def one_dry_run(request: Request) -> None:
    """422 for a dry run asked ambiguously, so that a write meant as a preview is never applied: `dry_run` given
    more than once (`?dry_run=true&dry_run=false`), or spelled otherwise (`?dryRun=true`)."""
    for name in sorted(_dry_run_spellings(request) - {"dry_run"}):
        raise _parameter_refused("unknown_parameter", "unknown query parameter; the dry run's is dry_run", name)
    if len(request.query_params.getlist("dry_run")) > 1:
        raise _parameter_refused("invalid_parameter", "given more than once; give it once", "dry_run")


async def no_dry_run(request: Request) -> None:
    """422 for a dry run asked of an endpoint that has none (the legacy ones), rather than a real write."""
    for name in sorted(_dry_run_spellings(request)):
        message = "the legacy endpoints have no dry run; POST /sync/… with ?dry_run=true has"
        raise _parameter_refused("unknown_parameter", message, name)


def _parameter_refused(code: str, message: str, name: str) -> DomainError:
    """The 422 `validation_error` of one query parameter."""
    return DomainError("validation_error", f"{name}: {message}.", 422, [FieldError(code, message, name)])
