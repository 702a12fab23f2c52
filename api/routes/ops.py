"""Operations: liveness, readiness, metrics. No credentials needed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.metrics import render
from api.responses import json_response
from core.ops.health import check_broker, check_database

router = APIRouter(tags=["operations"])


# Readiness checks run on threads of their own, never behind the requests that fill the shared thread pool.
_CHECKS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
_CHECK_TIMEOUT_SECONDS = 8.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    """Answered in the event loop: no thread, no connection, whatever the load."""
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Database and broker reachable, schema current",
    responses={503: {"description": 'Not ready: `{"status": "unavailable", "problems": [...]}`'}},
)
async def readyz() -> Response:
    loop = asyncio.get_running_loop()
    checks = [loop.run_in_executor(_CHECKS, check) for check in (check_database, check_broker)]
    try:
        found = await asyncio.wait_for(asyncio.gather(*checks), _CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        found = [f"checks did not answer within {_CHECK_TIMEOUT_SECONDS:g} s"]
    problems = [p for p in found if p is not None]
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text (or OpenMetrics on request)"}},
)
def metrics(request: Request) -> Response:
    """Jobs by type and status, records by outcome, chunk processing time, queue depth, the age of the oldest
    waiting work, webhook deliveries, and HTTP requests by route and status with their latency."""
    body, content_type = render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
