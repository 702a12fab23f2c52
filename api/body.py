"""Request bodies, read in full before any database work (SPEC §7).

A body is read in the request's own task, holding no thread, connection or transaction while it arrives; a body
that stalls longer than PFSYNC_BODY_IDLE_TIMEOUT_SECONDS between two parts is answered 408, and one past its
limit 413 as soon as it passes it. A batch body is spooled: memory up to PFSYNC_SPOOL_MEMORY_BYTES, a temporary
file past that, so an upload costs the same memory whatever its size. A batch upload first takes one of its
partner's upload slots (core.partners.uploads), before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Annotated, Any

import anyio
from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from core import json_input
from core.config import settings
from core.errors import DomainError
from core.partners.idempotency import fingerprint_hasher
from core.partners.uploads import RENEW_SECONDS, UploadSlot

SINGLE_BODY_LIMIT = 1024 * 1024
JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/ndjson")


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, what: str = "the body") -> None:
    """415 unless the request says it sends JSON (or says nothing)."""
    kind = media_type(request)
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise DomainError("unsupported_media_type", f"Send {what} as application/json.", 415)


def too_large(limit: int) -> DomainError:
    return DomainError(
        "body_too_large",
        f"The request body exceeds the limit of {limit} bytes (PFSYNC_MAX_BODY_BYTES).",
        413,
    )


def check_declared_length(request: Request, limit: int) -> None:
    """400 for a malformed Content-Length, 413 for one past `limit`: both before a byte is read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # Digits only: int() would also take a sign, spaces, underscores and non-ASCII digits.
        if not declared.isascii() or not declared.isdigit():
            raise DomainError("malformed_body", "Invalid Content-Length header.", 400)
        if int(declared) > limit:
            raise too_large(limit)


async def _parts(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's parts as they arrive: 408 if one takes too long, 413 once past `limit`, 400 if the client
    goes away."""
    check_declared_length(request, limit)
    stream = request.stream().__aiter__()
    size = 0
    while True:
        try:
            # asyncio's own timeout: anyio's `fail_after` cost a single sync four times as much CPU.
            async with asyncio.timeout(settings.body_idle_timeout_seconds):
                part = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DomainError(
                "body_timeout",
                f"The request body stalled for more than {settings.body_idle_timeout_seconds:g} s "
                "(PFSYNC_BODY_IDLE_TIMEOUT_SECONDS).",
                408,
                headers={"Connection": "close"},
            ) from None
        except ClientDisconnect:
            raise DomainError("client_disconnected", "The client went away before its body was sent.", 400) from None
        size += len(part)
        if size > limit:
            raise too_large(limit)
        if part:
            yield part


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, in memory (for bodies bounded small)."""
    return b"".join([part async for part in _parts(request, limit)])


async def single_body(request: Request) -> bytes:
    """The body of a single-record request (at most 1 MiB)."""
    require_json(request)
    return await read_body(request, SINGLE_BODY_LIMIT)


Body = Annotated[bytes, Depends(single_body)]


@dataclass(slots=True)
class SpooledBody:
    """A batch body read in full: a file positioned at its start, its size, and its idempotency fingerprint."""

    file: IO[bytes]
    size: int
    fingerprint: str


async def spool_body(request: Request, limit: int) -> SpooledBody:
    """Read the whole body into a spooled temporary file (the caller closes it)."""
    digest = fingerprint_hasher(request.method, request.url.path + "?" + request.url.query)
    file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=settings.spool_memory_bytes)  # noqa: SIM115
    size = 0
    try:
        async for part in _parts(request, limit):
            digest.update(part)
            file.write(part)
            size += len(part)
    except BaseException:
        file.close()
        raise
    file.seek(0)
    return SpooledBody(file, size, digest.hexdigest())


@asynccontextmanager
async def upload_slot(partner_id: str) -> AsyncIterator[None]:
    """Hold one of the partner's upload slots for the block, renewing its lease meanwhile; 429
    `too_many_concurrent_uploads` when they are all taken."""
    slot = UploadSlot(partner_id, settings.max_concurrent_uploads_per_partner)
    try:
        wait = await slot.acquire()
        if wait is not None:
            raise DomainError(
                "too_many_concurrent_uploads",
                f"This partner already has {slot.limit} batch uploads in progress "
                "(PFSYNC_MAX_CONCURRENT_UPLOADS_PER_PARTNER); retry once one has finished.",
                429,
                headers={"Retry-After": str(round(min(wait, 10.0)))},
            )
        renewing = asyncio.create_task(_keep_renewing(slot))
        try:
            yield
        finally:
            renewing.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await slot.release()


@asynccontextmanager
async def batch_upload(request: Request, partner_id: str) -> AsyncIterator[SpooledBody]:
    """A batch upload's whole body, read while holding one of the partner's upload slots (held until the block
    ends, as the body is stored): 413 past PFSYNC_MAX_BODY_BYTES, 429 when the slots are taken, both before a
    byte is read."""
    check_declared_length(request, settings.max_body_bytes)
    async with upload_slot(partner_id):
        body = await spool_body(request, settings.max_body_bytes)
        try:
            yield body
        finally:
            body.file.close()


async def _keep_renewing(slot: UploadSlot) -> None:
    while True:
        await anyio.sleep(RENEW_SECONDS)
        await slot.renew()


def parse_json(body: bytes) -> Any:
    """Parse a JSON document, numbers exact; a syntax error is a 400 naming its line and column."""
    if not body.strip():
        raise DomainError("malformed_body", "The request body is empty; send a JSON object.", 400)
    try:
        return json_input.loads(body)
    except json_input.JsonSyntaxError as exc:
        raise DomainError("malformed_body", f"The body is not valid JSON: {exc.describe()}.", 400) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be one JSON object."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise DomainError("invalid_body", "The body must be a JSON object.", 422)
    return value
