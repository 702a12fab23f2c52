"""The FastAPI application: routes, problem handlers, request ids and access logs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from api import openapi, problems
from api.metrics import observe_request
from api.routes import batch, jobs, legacy, ops, reads, sync, webhooks
from core import logs

log = logging.getLogger("pfsync.access")


def create_app() -> FastAPI:
    """A new application instance."""
    app = FastAPI(
        title="Pocketflows Sync",
        version="1.0.0",
        description="Keep businesses and customers in sync with Pocketflows: single records synchronously, "
        "batches of up to 100 000 records as jobs.",
    )
    problems.install(app)
    openapi.install(app)
    app.include_router(sync.router)
    app.include_router(batch.router)
    app.include_router(jobs.router)
    app.include_router(reads.router)
    app.include_router(legacy.router)
    app.include_router(webhooks.router)
    app.include_router(ops.router)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = (request.headers.get("x-request-id") or uuid.uuid4().hex)[:128]
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500  # what the error handler answers if the route raised
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            logs.request_id.reset(token)
            _observe(request, rid, status, time.perf_counter() - started)
        response.headers["X-Request-Id"] = rid
        return response

    return app


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
