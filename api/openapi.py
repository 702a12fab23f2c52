"""The OpenAPI document: what FastAPI cannot infer from routes that read raw bodies and answer `Response`s.

Routes declare their request bodies (`request_body`) and success answers (`ok`) with the JSON schemas below; `install`
then completes every operation with the problem+json answers it can give (401 without credentials, 503 while the
database is down, the body and idempotency errors of a POST, ...) and the HTTP Basic security scheme.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

Schema = dict[str, Any]

# Paths answered without credentials.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_NO_NUL = r"^[^\x00]*$"
_EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00.]+$"
_PHONE = r"^[0-9 +\-().]{3,32}$"


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
TEXT_255: Schema = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_NUL}
METADATA: Schema = {"type": "object", "description": "Any JSON object, at most 16 KiB serialized"}

FIELD_ERROR: Schema = {
    "type": "object",
    "required": ["code", "message", "path"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "path": nullable({"type": "string"})},
}

PROBLEM: Schema = {
    "type": "object",
    "description": "RFC 9457 problem details, with a stable machine `code`",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "array", "items": FIELD_ERROR},
    },
}

BUSINESS: Schema = {
    "type": "object",
    "required": ["id", "object", "external_id", "name", "metadata", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "business"},
        "external_id": nullable({"type": "string"}),
        "name": {"type": "string"},
        "metadata": {"type": "object"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
}

CUSTOMER: Schema = {
    "type": "object",
    "required": [
        "id",
        "object",
        "business_id",
        "external_id",
        "email_address",
        "phone_number",
        "full_name",
        "metadata",
        "unsubscribed",
        "created_at",
        "updated_at",
    ],  # fmt: skip
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "customer"},
        "business_id": {"type": "string"},
        "external_id": nullable({"type": "string"}),
        "email_address": nullable({"type": "string"}),
        "phone_number": nullable({"type": "string"}),
        "full_name": nullable({"type": "string"}),
        "metadata": {"type": "object"},
        "unsubscribed": {"enum": [None, "future", "campaign"]},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
}

_COUNTS = ("total", "processed", "created", "replaced", "unchanged", "superseded", "failed", "cancelled")
JOB: Schema = {
    "type": "object",
    "required": ["id", "object", "type", "business_id", "status", "counts", "created_at", "links"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "sync_job"},
        "type": {"enum": ["businesses", "customers"]},
        "business_id": nullable({"type": "string"}),
        "status": {"enum": ["queued", "running", "completed", "cancelled", "failed"]},
        "counts": {
            "type": "object",
            "required": list(_COUNTS),
            "properties": {name: {"type": "integer", "minimum": 0} for name in _COUNTS},
        },
        "created_at": TIMESTAMP,
        "started_at": nullable(TIMESTAMP),
        "finished_at": nullable(TIMESTAMP),
        "cancel_requested_at": nullable(TIMESTAMP),
        "links": {
            "type": "object",
            "required": ["self", "results"],
            "properties": {"self": {"type": "string"}, "results": {"type": "string"}},
        },
    },
}

RESULT: Schema = {
    "type": "object",
    "required": ["index", "outcome", "id", "external_id", "errors"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "outcome": {"enum": ["created", "replaced", "unchanged", "superseded", "failed", "cancelled"]},
        "id": nullable({"type": "string"}),
        "external_id": nullable({"type": "string"}),
        "errors": {"type": "array", "items": FIELD_ERROR},
    },
}


def list_of(item: Schema) -> Schema:
    """The list envelope of every paged read."""
    return {
        "type": "object",
        "required": ["object", "data", "has_more", "next_cursor"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            "has_more": {"type": "boolean"},
            "next_cursor": nullable({"type": "string"}),
        },
    }


def batch_answer(kind: str, item: Schema) -> Schema:
    """Pocketflows' synchronous batch shape (`Prefer: wait=N`, when the job finished in time)."""
    error = {
        "type": "object",
        "required": ["index", "code", "message"],
        "properties": {
            "index": {"type": "integer"},
            "external_id": nullable({"type": "string"}),
            "code": {"type": "string"},
            "message": {"type": "string"},
            "path": nullable({"type": "string"}),
        },
    }
    return {
        "type": "object",
        "required": [kind, "errors", "job"],
        "properties": {
            kind: {"type": "array", "items": nullable(item)},
            "errors": {"type": "array", "items": error},
            "job": JOB,
        },
    }


# Request bodies. The read-only fields of an object read from the API are accepted (and ignored).
_READ_ONLY: Schema = {"object": {}, "created_at": {}, "updated_at": {}}
_IDENTIFIED: list[Schema] = [
    {"required": ["id"], "properties": {"id": {"type": "string"}}},
    {"required": ["external_id"], "properties": {"external_id": {"type": "string"}}},
]
_BUSINESS_FIELDS: Schema = {
    "id": nullable({"type": "string", "pattern": _NO_NUL, "description": "Our id (`biz_…`)"}),
    "external_id": nullable(TEXT_255),
    "name": TEXT_255,
    "metadata": nullable(METADATA),
}
_CUSTOMER_FIELDS: Schema = {
    "id": nullable({"type": "string", "pattern": _NO_NUL, "description": "Our id (`cus_…`)"}),
    "external_id": nullable(TEXT_255),
    "email_address": nullable({"type": "string", "maxLength": 254, "pattern": _EMAIL}),
    "phone_number": nullable({"type": "string", "pattern": _PHONE}),
    "full_name": nullable({"type": "string", "maxLength": 255, "pattern": _NO_NUL}),
    "metadata": nullable(METADATA),
}

BUSINESS_SYNC: Schema = {
    "type": "object",
    "description": "Create or replace: properties left out are blanked. Found by `id`, else by `external_id`.",
    "required": ["name"],
    "properties": {**_BUSINESS_FIELDS, **_READ_ONLY},
    "additionalProperties": False,
    "anyOf": _IDENTIFIED,
}
CUSTOMER_SYNC: Schema = {
    "type": "object",
    "description": "Create or replace: properties left out are blanked. Found by `id`, else by `external_id`.",
    "properties": {**_CUSTOMER_FIELDS, **_READ_ONLY, "unsubscribed": {}, "business_id": {}},
    "additionalProperties": False,
    "anyOf": _IDENTIFIED,
}
_LEGACY_BUSINESS_FIELDS = {k: v for k, v in _BUSINESS_FIELDS.items() if k != "id"}
_LEGACY_CUSTOMER_FIELDS = {k: v for k, v in _CUSTOMER_FIELDS.items() if k != "id"}
LEGACY_BUSINESS_CREATE: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": _LEGACY_BUSINESS_FIELDS,
    "additionalProperties": False,
}
LEGACY_BUSINESS_UPDATE: Schema = {
    "type": "object",
    "description": "Only the fields sent change.",
    "properties": {**_BUSINESS_FIELDS, **_READ_ONLY},
    "additionalProperties": False,
}
LEGACY_CUSTOMER_CREATE: Schema = {
    "type": "object",
    "required": ["email_address"],
    "properties": {**_LEGACY_CUSTOMER_FIELDS, "email_address": {"type": "string", "maxLength": 254, "pattern": _EMAIL}},
    "additionalProperties": False,
}
LEGACY_CUSTOMER_UPDATE: Schema = {
    "type": "object",
    "description": "Only the fields sent change.",
    "properties": {**_CUSTOMER_FIELDS, **_READ_ONLY, "unsubscribed": {}, "business_id": {}},
    "additionalProperties": False,
}


def batch_of(kind: str, item: Schema, *, max_items: int | None = None) -> Schema:
    """`{"<kind>": [...]}`; each element is judged alone, so one bad element fails only itself."""
    items: Schema = {"type": "array", "minItems": 1, "items": item}
    if max_items is not None:
        items["maxItems"] = max_items
    return {"type": "object", "required": [kind], "properties": {kind: items}}


def request_body(schema: Schema, *, ndjson: bool = False) -> dict[str, Any]:
    """`openapi_extra` declaring a route's JSON request body (and NDJSON, one record per line, for batches)."""
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if ndjson:
        content["application/x-ndjson"] = {
            "schema": {"type": "string", "description": "One record object per line; blank lines are skipped"}
        }
    return {"requestBody": {"required": True, "content": content}}


def ok(schema: Schema, description: str = "Success") -> dict[str, Any]:
    """A JSON success answer."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "At most 255 characters, kept 24 h: the same key with the same request replays its first answer",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_COMMON = {
    "401": "`unauthorized`: missing or wrong credentials (with `WWW-Authenticate: Basic`)",
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


def _complete(document: dict[str, Any]) -> None:
    """Every operation's problem answers, the security scheme, and problem+json for each error declared bare."""
    document.setdefault("components", {}).setdefault("securitySchemes", {})["basic"] = {
        "type": "http",
        "scheme": "basic",
        "description": "Username: your API key id (`key_…`); password: its secret",
    }
    for schemas in ("HTTPValidationError", "ValidationError"):
        document["components"].get("schemas", {}).pop(schemas, None)
    if not document["components"].get("schemas"):
        document["components"].pop("schemas", None)
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
                    operation["parameters"] = [*parameters, _IDEMPOTENCY_KEY]
            for status, description in wanted.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                content = response.get("content", {})
                bare = not content or "HTTPValidationError" in str(content)
                if status[0] in "45" and bare and path not in PUBLIC_PATHS:
                    response["content"] = _problem(response.get("description", ""))["content"]


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
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
