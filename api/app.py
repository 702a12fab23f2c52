"""The FastAPI application: routes, problem handlers, request ids and access logs."""

from __future__ import annotations

import importlib.metadata
import logging
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import console, docs, openapi, problems, ratelimit
from api.metrics import observe_request
from api.routes import batch, jobs, legacy, ops, reads, sync, webhooks
from core import heap, logs
from core.config import settings

log = logging.getLogger("pfsync.access")

PACKAGE = "pocketflows-sync"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def package_version() -> str:
    """The release, from the installed package's metadata, else from pyproject.toml (a tree run uninstalled):
    the one version number, which the OpenAPI document carries as `info.version`."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        with PYPROJECT.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # Sync routes run on the thread pool; a request waiting there for a database connection holds a thread for at
    # most PFSYNC_DB_POOL_TIMEOUT_SECONDS before it is answered 503. Enough threads that, when the pool runs dry,
    # requests queue on the pool (bounded, answered) rather than for a thread (unbounded).
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    yield


def create_app() -> FastAPI:
    """A new application instance."""
    app = FastAPI(
        lifespan=lifespan,
        title="Pocketflows Sync",
        version=package_version(),
        description="Keep businesses and customers in sync with Pocketflows: single records synchronously, "
        "batches of up to 100 000 records as jobs.",
        # Served by api.docs from local assets instead of FastAPI's CDN-backed pages.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    openapi.install(app)
    docs.install(app)
    app.include_router(sync.router)
    app.include_router(batch.router)
    app.include_router(jobs.router)
    app.include_router(reads.router)
    app.include_router(legacy.router)
    app.include_router(webhooks.router)
    app.include_router(ops.router)
    console.install(app)

    app.add_middleware(RequestContext)
    return app


class RequestContext:
    """Each request's id (its `X-Request-Id`, or a new one) in the log context and on the response, with the
    RateLimit fields of an authenticated request's budget (api/ratelimit.py); one access log line and the HTTP
    metrics per request, observed when the response starts (a 500 if the route raised).

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` runs the rest of the app in a task of its own and
    passes the response through memory streams, a cost every request paid.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        rid = (given.decode("latin-1") or uuid.uuid4().hex)[:128]
        token = logs.request_id.set(rid)
        # Also on the request, for the 500 handler: it runs outside this middleware, once the context is reset.
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                headers = [
                    *message.get("headers", ()),
                    (b"x-request-id", rid.encode("latin-1")),
                    *ratelimit.headers(scope),
                ]
                message = {**message, "headers": headers}
                _observe(Request(scope), rid, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not answered:  # the route raised: the error handler outside answers 500
                _observe(Request(scope), rid, 500, time.perf_counter() - started)
            logs.request_id.reset(token)


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _observe(request: Request, request_id: str, status: int, seconds: float) -> None:
    """The access log line and the HTTP metrics of one request."""
    route = getattr(request.scope.get("route"), "path", "unmatched")
    method = request.method if request.method in _METHODS else "other"
    observe_request(method=method, route=route, status=status, seconds=seconds)
    log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": request.method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "partner_id": getattr(request.state, "partner_id", None),
        },
    )


app = create_app()
# After the imports and the app's routes and schemas: the long-lived part of the heap, exempt from collection.
heap.tune_collector()
