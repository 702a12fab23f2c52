"""Operations: liveness, readiness, metrics. No credentials needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.responses import json_response
from core.health import check_broker, check_database

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Database and broker reachable, schema current")
def readyz() -> Response:
    problems = [p for p in (check_database(), check_broker()) if p is not None]
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ok"})
