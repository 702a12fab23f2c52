"""The OpenAPI document: what FastAPI cannot infer from routes that read raw bodies and answer `Response`s.

Every object is a component of `api.schemas`, referenced by `$ref` (`ref("Business")`); routes declare their request
bodies (`request_body`) and success answers (`ok`, with the headers they send) with them. `install` then completes
every operation with the problem+json answers it can give (401 without credentials, 503 while the database is down,
the body and idempotency errors of a POST, ...), the headers each answer carries, the `Idempotency-Key` parameter of
every POST, and the HTTP Basic security scheme.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import Schema, components, ref

# Paths answered without credentials.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
NDJSON = "application/x-ndjson"


def _header(description: str, schema: Schema) -> Schema:
    return {"description": description, "schema": schema}


HEADERS: dict[str, Schema] = {
    "Location": _header("Where to poll the job: `/jobs/{id}`", {"type": "string"}),
    "Retry-After": _header("Seconds to wait before asking again", {"type": "integer", "minimum": 0}),
    "Sync-Outcome": _header(
        "What the sync did to the record",
        {"type": "string", "enum": ["created", "replaced", "unchanged", "superseded"]},
    ),
    "Idempotent-Replayed": _header(
        "`true` when this is the stored answer of an earlier request with the same `Idempotency-Key`",
        {"type": "string", "enum": ["true"]},
    ),
    "Preference-Applied": _header("The `Prefer: wait=N` that was honoured", {"type": "string"}),
    "Deprecation": _header("The operation is deprecated", {"type": "string", "enum": ["true"]}),
    "Link": _header('The successor: `<path>; rel="successor-version"`', {"type": "string"}),
    "WWW-Authenticate": _header("The scheme to authenticate with: `Basic`", {"type": "string"}),
    "X-Request-Id": _header("The request's id (the one sent, or a new one), as in the logs", {"type": "string"}),
    "RateLimit-Policy": _header(
        'The partner\'s request budget (draft-ietf-httpapi-ratelimit-headers): `"partner";q=QUOTA;w=SECONDS`, '
        "QUOTA requests in any window of SECONDS",
        {"type": "string", "examples": ['"partner";q=200;w=2']},
    ),
    "RateLimit": _header(
        'What is left of the budget: `"partner";r=REMAINING;t=SECONDS`, SECONDS until the oldest counted '
        "request leaves the window (absent while the budget cannot be read: requests are then not refused)",
        {"type": "string", "examples": ['"partner";r=157;t=1']},
    ),
}
PARAMETERS: dict[str, Schema] = {
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "At most 255 characters, kept 24 h: the same key with the same request replays its first "
        "answer (with `Idempotent-Replayed: true`); with another request: 422 `idempotency_key_reused`",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "Prefer": {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`wait=N` (N ≤ 60): wait up to N seconds for the job; finished in time, the answer is 200 "
        "with Pocketflows' synchronous shape and `Preference-Applied`, else the plain 202",
        "schema": {"type": "string", "examples": ["wait=10"]},
    },
}


def header_ref(name: str, *, required: bool = False) -> Schema:
    return {"$ref": f"#/components/headers/{name}", **({"required": True} if required else {})}


def _headers(names: tuple[str, ...], required: tuple[str, ...] = ()) -> Schema:
    """Response headers. A `$ref` cannot carry `required`, so a required header is declared inline."""
    return {name: {**HEADERS[name], "required": True} if name in required else header_ref(name) for name in names}


def ok(
    schema: str | Schema,
    description: str = "Success",
    *,
    headers: tuple[str, ...] = (),
    required_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A JSON success answer: a component's name (or a schema), and the headers it carries."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref(schema) if isinstance(schema, str) else schema}},
    }
    if headers or required_headers:
        answer["headers"] = _headers((*required_headers, *headers), required_headers)
    return answer


def request_body(name: str, *, ndjson: bool = False) -> dict[str, Any]:
    """`openapi_extra` declaring a route's JSON request body, the component `name`; for a sync batch also NDJSON
    (one record per line) and the `Prefer: wait=N` parameter."""
    content: dict[str, Any] = {"application/json": {"schema": ref(name)}}
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if ndjson:
        content[NDJSON] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "One record object per line (as in the JSON envelope); blank lines are skipped. "
                "To a generator that knows no NDJSON it is bytes: map `application/x-ndjson` to "
                "`application/octet-stream` (openapi-python-client: `content_type_overrides`).",
            }
        }
        extra["parameters"] = [{"$ref": "#/components/parameters/Prefer"}]
    return extra


def ndjson_answer(description: str) -> dict[str, Any]:
    """The NDJSON media type of an answer: a byte stream, one JSON object per line."""
    return {NDJSON: {"schema": {"type": "string", "format": "binary", "description": description}}}


_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_COMMON = {
    "401": "`unauthorized`: missing or wrong credentials (with `WWW-Authenticate: Basic`)",
    "429": "`rate_limited`: over the partner's request budget; retry after `Retry-After`",
    "503": "`service_unavailable`: the database is unreachable; retry after `Retry-After`",
}
_WITH_PARAMETERS = {"422": "`validation_error`: a parameter is invalid"}
_WITH_PATH = {"404": "`not_found`: no such object (another partner's ids too)"}
_WITH_BODY = {
    "400": "`malformed_body` (with line and column) or `invalid_idempotency_key`",
    "409": "`idempotency_key_in_use` while the first request with this key runs",
    "413": "`body_too_large` (PFSYNC_MAX_BODY_BYTES; 1 MiB for one record)",
    "415": "`unsupported_media_type`",
    "422": "`invalid_body`, `validation_error` or `idempotency_key_reused`",
}
# Headers of answers by status, whatever the operation.
_STATUS_HEADERS = {"401": ("WWW-Authenticate",), "429": ("Retry-After",), "503": ("Retry-After",)}


def _complete_headers(path: str, method: str, operation: dict[str, Any]) -> None:
    for status, response in operation["responses"].items():
        headers: dict[str, Any] = response.setdefault("headers", {})
        names = ["X-Request-Id", *_STATUS_HEADERS.get(status, ())]
        if method == "post":
            if status == "409":
                names.append("Retry-After")  # `idempotency_key_in_use`
            if status[0] not in "45" or status in ("404", "409", "422"):
                names.append("Idempotent-Replayed")  # answers of the first request may be replayed
        if path not in PUBLIC_PATHS:
            if operation.get("deprecated"):
                names += ["Deprecation", "Link"]
            if status != "401":  # every authenticated answer spends, and shows, the budget
                names += ["RateLimit-Policy", "RateLimit"]
        for name in names:
            headers.setdefault(name, header_ref(name))


def _complete(document: dict[str, Any]) -> None:
    """The components, every operation's problem answers and headers, the Idempotency-Key of every POST."""
    found = document.setdefault("components", {})
    found["securitySchemes"] = {
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "Username: your API key id (`key_…`); password: its secret",
        }
    }
    found["schemas"] = components()
    found["headers"] = HEADERS
    found["parameters"] = PARAMETERS
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            parameters = operation.get("parameters", [])
            wanted: dict[str, str] = {}
            if path not in PUBLIC_PATHS:
                wanted |= _COMMON
                operation["security"] = [{"basic": []}]
            if parameters:
                wanted |= _WITH_PARAMETERS
            if any(p.get("in") == "path" for p in parameters):
                wanted |= _WITH_PATH
            if method in ("post", "put", "patch"):
                wanted |= _WITH_BODY
                if method == "post":
                    operation["parameters"] = [*parameters, {"$ref": "#/components/parameters/Idempotency-Key"}]
            for status, description in wanted.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                content = response.get("content", {})
                bare = not content or "HTTPValidationError" in str(content)
                if status[0] in "45" and bare and path not in PUBLIC_PATHS:
                    response["content"] = _PROBLEM
            _complete_headers(path, method, operation)


def _name_operations(document: dict[str, Any]) -> None:
    """Each operation's id is its handler's name (`sync_business`, not FastAPI's `sync_business_sync_businesses_post`),
    so a generated client's functions are named after it."""
    operations = [
        (path, method, operation)
        for path, methods in document.get("paths", {}).items()
        for method, operation in methods.items()
    ]
    names = []
    for path, method, operation in operations:
        suffix = re.sub(r"\W", "_", path) + "_" + method
        given: str = operation.get("operationId", "")
        names.append(given[: -len(suffix)] if given.endswith(suffix) and len(given) > len(suffix) else given)
    if len(set(names)) == len(names):
        for (_, _, operation), name in zip(operations, names, strict=True):
            operation["operationId"] = name


def install(app: FastAPI) -> None:
    """Serve the completed document at the app's `openapi_url`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            _complete(document)
            _name_operations(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
