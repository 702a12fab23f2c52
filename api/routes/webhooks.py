"""Completion webhooks: the partner's endpoint (`/webhook`) and a job's deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.body import Body, parse_json_object
from api.deps import DbSession, PartnerId
from api.openapi import TIMESTAMP, Schema, list_of, nullable, ok, request_body
from api.responses import json_response, list_body
from core.jobs import service as jobs
from core.webhooks import service as webhooks

router = APIRouter(tags=["webhooks"])

_URL: Schema = {"type": "string", "format": "uri", "minLength": 1, "maxLength": webhooks.MAX_URL_LENGTH}
WEBHOOK_SETTINGS: Schema = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {**_URL, "description": "Where to POST job-finished events: https (a host, no credentials)"},
        "rotate_secret": {"type": "boolean", "default": False, "description": "Replace the signing secret"},
    },
}
WEBHOOK: Schema = {
    "type": "object",
    "required": ["object", "url"],
    "properties": {
        "object": {"const": "webhook"},
        "url": {"type": "string"},
        "secret": {"type": "string", "description": "Only when just created or rotated: `whsec_…`"},
    },
}
_ATTEMPT: Schema = {
    "type": "object",
    "required": ["attempt", "at", "status_code", "error", "duration_ms"],
    "properties": {
        "attempt": {"type": "integer", "minimum": 1},
        "at": TIMESTAMP,
        "status_code": nullable({"type": "integer"}),
        "error": nullable({"type": "string"}),
        "duration_ms": {"type": "integer", "minimum": 0},
    },
}
WEBHOOK_DELIVERY: Schema = {
    "type": "object",
    "required": ["id", "object", "job_id", "event", "url", "status", "attempts", "history", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "webhook_delivery"},
        "job_id": {"type": "string"},
        "event": {"enum": ["sync_job.completed", "sync_job.cancelled", "sync_job.failed"]},
        "url": {"type": "string"},
        "status": {"enum": ["pending", "succeeded", "failed"]},
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": nullable(TIMESTAMP),
        "last_attempt_at": nullable(TIMESTAMP),
        "last_status_code": nullable({"type": "integer"}),
        "last_error": nullable({"type": "string"}),
        "history": {"type": "array", "items": _ATTEMPT},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "delivered_at": nullable(TIMESTAMP),
    },
}

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000")]
Cursor = Annotated[str | None, Query(pattern=r"^[^\x00]*$", description="Return items after this id")]


@router.get(
    "/webhook",
    summary="The completion webhook",
    responses={200: ok(WEBHOOK), 404: {"description": "`not_found`: no webhook is configured"}},
)
def get_webhook(session: DbSession, partner_id: PartnerId) -> Response:
    """Where job-finished notifications go. The signing secret is never shown again after it was created."""
    return json_response(webhooks.get_webhook(session, partner_id=partner_id).view())


@router.put(
    "/webhook",
    summary="Set the completion webhook",
    responses={
        200: ok(WEBHOOK, "The URL changed (and, with `rotate_secret`, the new secret, shown this once)"),
        201: ok(WEBHOOK, "Created; the body carries the signing secret, shown this once"),
        422: {"description": "`invalid_url`, `unknown_field` or `validation_error`"},
    },
    openapi_extra=request_body(WEBHOOK_SETTINGS),
)
def put_webhook(session: DbSession, partner_id: PartnerId, body: Body) -> Response:
    """Body `{"url": "https://…", "rotate_secret": false}`. Every job that finishes is then POSTed there, signed
    with the secret (header `Pocketflows-Signature`)."""
    url, rotate = webhooks.parse_webhook_body(parse_json_object(body))
    webhook, created = webhooks.set_webhook(session, partner_id=partner_id, url=url, rotate_secret=rotate)
    return json_response(webhook.view(), 201 if created else 200)


@router.delete(
    "/webhook",
    status_code=204,
    summary="Remove the completion webhook",
    responses={404: {"description": "`not_found`: no webhook is configured"}},
)
def delete_webhook(session: DbSession, partner_id: PartnerId) -> Response:
    """Stop notifications; deliveries still pending end `failed`."""
    webhooks.delete_webhook(session, partner_id=partner_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/webhook_deliveries",
    summary="A job's webhook deliveries and their attempts",
    responses={200: ok(list_of(WEBHOOK_DELIVERY))},
)
def list_webhook_deliveries(
    session: DbSession, partner_id: PartnerId, job_id: str, limit: Limit = 100, starting_after: Cursor = None
) -> Response:
    """The notifications of the job's end, oldest first, each with its status and every attempt."""
    job = jobs.get_job(session, partner_id=partner_id, job_id=job_id)
    rows, has_more = webhooks.list_deliveries(session, job_id=job.id, limit=limit, starting_after=starting_after)
    return json_response(list_body([webhooks.delivery_view(d) for d in rows], has_more))
