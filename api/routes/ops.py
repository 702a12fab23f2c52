"""Operations: liveness, readiness, metrics. No credentials needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.metrics import render
from api.responses import json_response
from core.health import check_broker, check_database

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Database and broker reachable, schema current",
    responses={503: {"description": 'Not ready: `{"status": "unavailable", "problems": [...]}`'}},
)
def readyz() -> Response:
    problems = [p for p in (check_database(), check_broker()) if p is not None]
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
