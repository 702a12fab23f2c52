"""RFC 9457 problem responses, and the handlers that turn every error into one."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DomainError, FieldError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://docs.pocketflows.com/sync/problems/"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


MAX_DETAIL_BYTES = 1024


def _bounded(text: str, limit: int = MAX_DETAIL_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, marked with an ellipsis where it was cut (SPEC §7)."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "…"


def problem_body(error: DomainError) -> dict[str, Any]:
    """The problem+json document for an error."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + error.code,
        "title": _TITLES.get(error.status, "Error"),
        "status": error.status,
        "detail": _bounded(error.message),
        "code": error.code,
    }
    if error.errors:
        body["errors"] = [e.as_dict() for e in error.errors]
    return body


def problem_response(error: DomainError) -> Response:
    """A response carrying the problem document of an error."""
    return Response(
        orjson.dumps(problem_body(error)),
        status_code=error.status,
        media_type="application/problem+json",
        headers=error.headers,
    )


def _validation_errors(exc: RequestValidationError) -> DomainError:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else ""
        path = ".".join(loc[1:]) or where
        errors.append(FieldError("invalid_parameter", str(err.get("msg", "invalid")).lower(), path))
    return DomainError("validation_error", "; ".join(f"{e.path}: {e.message}" for e in errors), 422, errors)


def _unavailable(reason: str, retry_after: int) -> Response:
    return problem_response(
        DomainError("service_unavailable", f"{reason}; retry shortly.", 503, headers={"Retry-After": str(retry_after)})
    )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem."""

    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> Response:
        return problem_response(_validation_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        code = codes.get(exc.status_code, "http_error")
        detail = str(exc.detail) if exc.detail else _TITLES.get(exc.status_code, "Error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such resource."
        error = DomainError(code, detail, exc.status_code, headers=dict(exc.headers or {}))
        return problem_response(error)

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_request: Request, exc: Exception) -> Response:
        log.warning("no database connection free in time: %s", exc)
        return _unavailable("The service is overloaded: no database connection was free in time", 2)

    @app.exception_handler(OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        return _unavailable("The database is unavailable", 5)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> Response:
        if exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError):
            return await _database_down(request, exc)
        log.exception("database error")
        return problem_response(DomainError("internal_error", "An internal error occurred.", 500))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # This handler runs outside the middleware that binds the request's log context: name the request here.
        log.exception(
            "unhandled error", exc_info=exc, extra={"request_id": getattr(_request.state, "request_id", None)}
        )
        return problem_response(DomainError("internal_error", "An internal error occurred.", 500))
