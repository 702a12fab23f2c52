"""The FastAPI application: routes, problem handlers, request ids and access logs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from api import problems
from api.routes import batch, jobs, legacy, ops, reads, sync
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
    app.include_router(sync.router)
    app.include_router(batch.router)
    app.include_router(jobs.router)
    app.include_router(reads.router)
    app.include_router(legacy.router)
    app.include_router(ops.router)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = logs.request_id.set(rid[:128])
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            logs.request_id.reset(token)
        response.headers["X-Request-Id"] = rid[:128]
        route = request.scope.get("route")
        log.info(
            "request",
            extra={
                "request_id": rid[:128],
                "method": request.method,
                "route": getattr(route, "path", "unmatched"),
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "partner_id": getattr(request.state, "partner_id", None),
            },
        )
        return response

    return app


app = create_app()
