"""Completion webhooks: the partner's endpoint (`/webhook`) and a job's deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.body import Body, parse_json_object
from api.deps import DbSession, PartnerId
from api.openapi import ok, request_body
from api.responses import json_response, list_body
from core.jobs import service as jobs
from core.partners.service import require_live_key
from core.webhooks import service as webhooks

router = APIRouter(tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000")]
Cursor = Annotated[str | None, Query(pattern=r"^[^\x00]*$", description="Return items after this id")]


@router.get(
    "/webhook",
    summary="The completion webhook",
    responses={200: ok("Webhook"), 404: {"description": "`not_found`: no webhook is configured"}},
)
def get_webhook(session: DbSession, partner_id: PartnerId) -> Response:
    """Where job-finished notifications go. The signing secret is never shown again after it was created."""
    return json_response(webhooks.get_webhook(session, partner_id=partner_id).view())


@router.put(
    "/webhook",
    summary="Set the completion webhook",
    responses={
        200: ok("Webhook", "The URL changed (and, with `rotate_secret`, the new secret, shown this once)"),
        201: ok("Webhook", "Created; the body carries the signing secret, shown this once"),
        422: {"description": "`invalid_url`, `unknown_field` or `validation_error`"},
    },
    openapi_extra=request_body("WebhookSettings"),
)
def put_webhook(request: Request, session: DbSession, partner_id: PartnerId, body: Body) -> Response:
    """Body `{"url": "https://…", "rotate_secret": false}`. Every job that finishes is then POSTed there, signed
    with the secret (header `Pocketflows-Signature`)."""
    require_live_key(session, key_id=request.state.key_id)
    url, rotate = webhooks.parse_webhook_body(parse_json_object(body))
    webhook, created = webhooks.set_webhook(session, partner_id=partner_id, url=url, rotate_secret=rotate)
    return json_response(webhook.view(), 201 if created else 200)


@router.delete(
    "/webhook",
    status_code=204,
    summary="Remove the completion webhook",
    responses={404: {"description": "`not_found`: no webhook is configured"}},
)
def delete_webhook(request: Request, session: DbSession, partner_id: PartnerId) -> Response:
    """Stop notifications; deliveries still pending end `failed`."""
    require_live_key(session, key_id=request.state.key_id)
    webhooks.delete_webhook(session, partner_id=partner_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/webhook_deliveries",
    summary="A job's webhook deliveries and their attempts",
    responses={200: ok("WebhookDeliveryList")},
)
def list_webhook_deliveries(
    session: DbSession, partner_id: PartnerId, job_id: str, limit: Limit = 100, starting_after: Cursor = None
) -> Response:
    """The notifications of the job's end, oldest first, each with its status and every attempt."""
    job = jobs.get_job(session, partner_id=partner_id, job_id=job_id)
    rows, has_more = webhooks.list_deliveries(session, job_id=job.id, limit=limit, starting_after=starting_after)
    return json_response(list_body([webhooks.delivery_view(d) for d in rows], has_more))
