"""Request dependencies: the database session, the authenticated partner, the request body."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import anyio
import anyio.from_thread
import orjson
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core import logs
from core.config import settings
from core.db import new_session
from core.errors import DomainError
from core.idempotency import fingerprint_hasher
from core.partners import authenticate, cached_partner

log = logging.getLogger(__name__)

SINGLE_BODY_LIMIT = 1024 * 1024
JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/ndjson")


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the request's transaction has committed (e.g. to publish to the broker)."""
    session.info.setdefault("after_commit", []).append(callback)


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    for callback in session.info.pop("after_commit", []):
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def get_session() -> AsyncIterator[Session]:
    """The request's session: committed when the route returns, before the response is sent.

    Opening a session does no I/O, so it happens in the request's task; ending one does (COMMIT, giving the
    connection back), so that runs in the thread pool, unless the route committed already (the single-record
    routes and `GET /jobs/{id}` do, in their own thread): every trip through the pool costs the request CPU.
    """
    session = new_session()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_roll_back, session)
        raise
    if session.in_transaction() or session.info.get("after_commit"):
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_commit, session)
    else:
        session.close()


DbSession = Annotated[Session, Depends(get_session, scope="function")]


def _unauthorized(detail: str) -> DomainError:
    return DomainError("unauthorized", detail, 401, headers={"WWW-Authenticate": 'Basic realm="pfsync"'})


async def current_partner(request: Request, session: DbSession) -> str:
    """The partner whose API key (HTTP Basic: key id and secret) signed the request, also put in the log context.

    Async: a key checked in the last seconds is answered from memory without a trip through the thread pool, and
    the log context set here, in the request's own task, is inherited by the route's thread.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authenticate with HTTP Basic: your API key id as username, its secret as password.")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("Only HTTP Basic authentication is supported.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("Malformed Basic credentials.") from None
    key_id, sep, secret = decoded.partition(":")
    if not sep or not key_id or not secret:
        raise _unauthorized("Malformed Basic credentials.")
    partner_id = cached_partner(key_id=key_id, secret=secret)
    if partner_id is None:
        partner_id = await run_in_threadpool(lambda: authenticate(session, key_id=key_id, secret=secret))
    if partner_id is None:
        raise _unauthorized("Unknown API key or wrong secret.")
    request.state.partner_id = partner_id
    logs.partner_id.set(partner_id)
    return partner_id


PartnerId = Annotated[str, Depends(current_partner)]


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def too_large(limit: int) -> DomainError:
    return DomainError(
        "body_too_large",
        f"The request body exceeds the limit of {limit} bytes (PFSYNC_MAX_BODY_BYTES).",
        413,
    )


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        # Digits only: int() would also take a sign, spaces, underscores and non-ASCII digits.
        if not declared.isascii() or not declared.isdigit():
            raise DomainError("malformed_body", "Invalid Content-Length header.", 400)
        size = int(declared)
        if size > limit:
            raise too_large(limit)


class BodyStream:
    """A request body read part by part from a route running in the thread pool, never held whole.

    It refuses the body with 413 as soon as it passes `limit` bytes, and hashes it on the way for idempotency.
    """

    def __init__(self, request: Request, limit: int) -> None:
        _check_declared_length(request, limit)
        self._request = request
        self._limit = limit
        self._size = 0
        self._hash = fingerprint_hasher(request.method, request.url.path + "?" + request.url.query)
        self._stream = request.stream().__aiter__()
        self.finished = False

    async def _next_part(self) -> bytes:
        return await self._stream.__anext__()

    def parts(self) -> Iterator[bytes]:
        """The body's remaining parts, as they arrive."""
        while not self.finished:
            try:
                part = anyio.from_thread.run(self._next_part)
            except StopAsyncIteration:
                self.finished = True
                return
            self._size += len(part)
            if self._size > self._limit:
                raise too_large(self._limit)
            self._hash.update(part)
            if part:
                yield part

    def fingerprint(self) -> str:
        """The request's idempotency fingerprint; reads (and discards) whatever of the body is left."""
        for _ in self.parts():
            pass
        return self._hash.hexdigest()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes (never buffered past it)."""
    _check_declared_length(request, limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
    return b"".join(parts)


async def single_body(request: Request) -> bytes:
    """The body of a single-record request (at most 1 MiB)."""
    kind = media_type(request)
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise DomainError("unsupported_media_type", "Send the body as application/json.", 415)
    return await read_body(request, SINGLE_BODY_LIMIT)


Body = Annotated[bytes, Depends(single_body)]


def parse_json(body: bytes) -> Any:
    """Parse a JSON document; a syntax error is a 400 naming its line and column."""
    if not body.strip():
        raise DomainError("malformed_body", "The request body is empty; send a JSON object.", 400)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DomainError(
            "malformed_body", f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.", 400
        ) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be one JSON object."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise DomainError("invalid_body", "The body must be a JSON object.", 422)
    return value


def max_batch_records() -> int:
    return settings.max_batch_records
