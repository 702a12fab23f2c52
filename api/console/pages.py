"""The console's pages, live fragments, downloads and actions, under /console/ (SPEC §10).

A page is rendered whole on the server; its live part is also served alone under /console/live/… with the same
query, and console.js swaps it in every few seconds. Every read is keyset-paged or bounded by an index, so no page
counts over the results or the jobs.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.console.auth import (
    CSRF_FIELD,
    AdminAction,
    ConsoleAction,
    ConsoleError,
    LiveOperator,
    PageOperator,
    check_origin,
    console_base,
    expired_cookie,
    read_form,
    session_cookie,
    signed_in_operator,
)
from api.console.census import census
from api.console.chart import throughput_chart
from api.console.render import SECURITY_HEADERS, render
from api.console.views import JobRow, chunk_row, job_row
from api.deps import DbSession
from core.config import settings
from core.db import after_commit, session_scope
from core.errors import DomainError
from core.jobs import processing, results
from core.jobs import service as jobs
from core.jobs.status import JobStatus
from core.operators.service import OperatorSession, SignedIn, SignInRefused, sign_in, sign_out
from core.ops import metrics
from core.ops.throughput import records_per_second
from core.partners import service as partners
from core.records.rules import OUTCOMES
from workers.publish import publish_chunks

log = logging.getLogger("pfsync.console")
router = APIRouter(prefix="/console", include_in_schema=False)

STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
KINDS = ("businesses", "customers")
JOBS_PER_PAGE = 50
CHUNKS_PER_PAGE = 100
RESULTS_PER_PAGE = 50
LATEST_JOBS = 10
PARTNERS_PER_PAGE = 100
PARTNER_JOBS = 20
_ID = re.compile(r"[a-z]{3}_[0-9A-Z]{26}")
_TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}
NOTICES = {
    "cancelled": "Cancel requested: records not yet processed end cancelled; chunks being processed finish first.",
    "revoked": "Key revoked: no write with it is applied from now on, and within a second every request with it "
    "answers 401.",
}


@contextmanager
def domain_errors() -> Iterator[None]:
    """A domain error (not found, finished already) as the console's error page."""
    try:
        yield
    except DomainError as error:
        raise ConsoleError(error.status, _TITLES.get(error.status, "Error"), error.message) from None


def _id_param(value: str | None, what: str) -> str | None:
    """An id given in the query: None when empty, 400 when it cannot be an id."""
    if not value:
        return None
    if not _ID.fullmatch(value):
        raise ConsoleError(400, "Bad Request", f"That is not a {what} id.")
    return value


def _index_param(value: str | None) -> int:
    """A cursor of indices (a chunk number, a result index): -1 before the first."""
    if not value:
        return -1
    if not value.isdigit() or len(value) > 12:
        raise ConsoleError(400, "Bad Request", "A cursor is a number.")
    return int(value)


def _choice(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    if not value:
        return None
    if value not in choices:
        raise ConsoleError(400, "Bad Request", f"A {what} is one of {', '.join(choices)}.")
    return value


def _query(**params: str | int | None) -> str:
    """A query string of the parameters that have a value ('' when none has)."""
    kept = {name: value for name, value in params.items() if value not in (None, "", -1)}
    return "?" + urllib.parse.urlencode(kept) if kept else ""


def _page(request: Request, me: OperatorSession, template: str, nav: str, **context: Any) -> Response:
    return render(request, template, {"me": me, "nav": nav, "csrf_field": CSRF_FIELD, **context})


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


# --- signing in and out ----------------------------------------------------------------------------------------


def _safe_next(request: Request, target: str | None) -> str:
    """Where to go after signing in: a console path of this site, else the overview."""
    base = console_base(request)
    if target and target.startswith(base + "/") and "//" not in target and "\\" not in target:
        return target
    return base + "/"


@router.get("")
def console_root(request: Request) -> Response:
    return _redirect(console_base(request) + "/")


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    if await signed_in_operator(request) is not None:
        return _redirect(_safe_next(request, next))
    return render(request, "login.html", {"me": None, "next": _safe_next(request, next), "error": None})


def _sign_in(username: str, password: str) -> SignedIn | SignInRefused:
    # Each of its transactions committed on its own: a failure's count must stick.
    return sign_in(session_scope, username=username, password=password)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the credentials of the form (`username`, `password`) and open a session."""
    check_origin(request)
    form = await read_form(request)
    username = form.get("username", "").strip()
    password = form.get("password", "")
    target = _safe_next(request, form.get("next"))
    result = await run_in_threadpool(_sign_in, username, password)
    if isinstance(result, SignedIn):
        log.info("operator signed in", extra={"operator": result.session.username, "role": result.session.role})
        response = _redirect(target)
        max_age = round(settings.console_session_hours * 3600)
        response.headers.append("Set-Cookie", session_cookie(request, result.token, max_age))
        return response
    context = {"me": None, "next": target, "username": username}
    if result.busy:
        log.warning("console sign-in refused: as many password checks running as allowed")
        return render(
            request,
            "login.html",
            {**context, "error": "Too many sign-ins at once: try again in a second."},
            status=429,
            headers={"Retry-After": str(result.retry_after)},
        )
    if result.locked:
        log.warning("console sign-in refused: too many failures", extra={"username": username[:64]})
        error = f"Too many failed sign-ins for this username: try again in {result.retry_after} s."
        return render(
            request,
            "login.html",
            {**context, "error": error},
            status=429,
            headers={"Retry-After": str(result.retry_after)},
        )
    log.warning("console sign-in refused: wrong username or password", extra={"username": username[:64]})
    return render(request, "login.html", {**context, "error": "Wrong username or password."}, status=401)


@router.post("/logout")
def logout(request: Request, session: DbSession, action: ConsoleAction) -> Response:
    """End the session now (the cookie opens nothing afterwards, on any API process)."""
    sign_out(session, session_id=action.operator.session_id)
    after_commit(session, lambda: log.info("operator signed out", extra={"operator": action.operator.username}))
    response = _redirect(console_base(request) + "/login")
    response.headers.append("Set-Cookie", expired_cookie(request))
    return response


# --- overview --------------------------------------------------------------------------------------------------


def _overview(session: Session) -> dict[str, Any]:
    errors: dict[str, str] = {}
    snapshot = None
    try:
        snapshot = metrics.read_database()
    except Exception as exc:
        log.warning("console: cannot read the figures: %s", exc)
        errors["database"] = f"cannot read the figures ({type(exc).__name__})"
    queue = None
    try:
        queue = metrics.read_broker()
    except Exception as exc:
        errors["broker"] = f"cannot reach the broker ({type(exc).__name__})"
    by_status: dict[str, dict[str, int]] = {status: dict.fromkeys(KINDS, 0) for status in STATUSES}
    if snapshot is not None:
        for (kind, status, _dry_run), count in snapshot.jobs.items():  # dry runs and real jobs alike
            row = by_status.setdefault(status, dict.fromkeys(KINDS, 0))
            row[kind] = row.get(kind, 0) + count
    now = datetime.now(UTC)
    latest = [job_row(job, name, now) for job, name in jobs.list_all_jobs(session, limit=LATEST_JOBS).jobs]
    running = jobs.list_all_jobs(session, status=JobStatus.RUNNING, limit=LATEST_JOBS)
    return {
        "snapshot": snapshot,
        "queue": queue,
        "errors": errors,
        "by_status": by_status,
        "kinds": KINDS,
        "chart": throughput_chart(records_per_second(session)),
        "census": census.read(),
        "latest": latest,
        "running": [job_row(job, name, now) for job, name in running.jobs],
        "more_running": running.has_older,
        "queue_name": settings.queue_name,
        "updated_at": now,
    }


@router.get("/")
def overview(request: Request, session: DbSession, me: PageOperator) -> Response:
    """At a glance: queue, oldest waiting work, workers, records per second, jobs by status, latest jobs."""
    return _page(request, me, "overview.html", "overview", **_overview(session))


@router.get("/live/overview")
def overview_live(request: Request, session: DbSession, me: LiveOperator) -> Response:
    return _page(request, me, "_overview_live.html", "overview", **_overview(session))


# --- jobs ------------------------------------------------------------------------------------------------------


def _jobs_context(
    session: Session,
    *,
    status: str | None,
    kind: str | None,
    partner: str | None,
    after: str | None,
    before: str | None,
) -> dict[str, Any]:
    status = _choice(status, STATUSES, "status")
    kind = _choice(kind, KINDS, "type")
    partner = _id_param(partner, "partner")
    after, before = _id_param(after, "job"), _id_param(before, "job")
    page = jobs.list_all_jobs(
        session,
        status=status,
        kind=kind,
        partner_id=partner,
        limit=JOBS_PER_PAGE,
        starting_after=after,
        ending_before=before,
    )
    now = datetime.now(UTC)
    rows = [job_row(job, name, now) for job, name in page.jobs]
    filters = {"status": status, "type": kind, "partner": partner}
    return {
        "rows": rows,
        "filters": filters,
        "newer": _query(**filters, before=rows[0].id) if rows and page.has_newer else None,
        "older": _query(**filters, after=rows[-1].id) if rows and page.has_older else None,
        "live_query": _query(**filters, after=after, before=before),
        "updated_at": now,
    }


@router.get("/jobs")
def jobs_page(
    request: Request,
    session: DbSession,
    me: PageOperator,
    status: str | None = None,
    type: str | None = None,  # noqa: A002
    partner: str | None = None,
    id: str | None = None,  # noqa: A002
    after: str | None = None,
    before: str | None = None,
) -> Response:
    """Every partner's jobs, newest first, filtered by status, type and partner; `id` finds one job."""
    notice = None
    status_code = 200
    if id is not None and id.strip():
        wanted = id.strip()
        try:
            job, _ = jobs.find_job(session, job_id=wanted)
        except DomainError:
            notice = f"No job {wanted}."
            status_code = 404
        else:
            return _redirect(f"{console_base(request)}/jobs/{job.id}")
    context = _jobs_context(session, status=status, kind=type, partner=partner, after=after, before=before)
    response = _page(
        request,
        me,
        "jobs.html",
        "jobs",
        partners=partners.partner_choices(session),
        statuses=STATUSES,
        kinds=KINDS,
        notice=notice,
        find=id or "",
        **context,
    )
    response.status_code = status_code
    return response


@router.get("/live/jobs")
def jobs_live(
    request: Request,
    session: DbSession,
    me: LiveOperator,
    status: str | None = None,
    type: str | None = None,  # noqa: A002
    partner: str | None = None,
    after: str | None = None,
    before: str | None = None,
) -> Response:
    context = _jobs_context(session, status=status, kind=type, partner=partner, after=after, before=before)
    return _page(request, me, "_jobs_live.html", "jobs", **context)


def _job_live_context(session: Session, job_id: str, chunks_after: str | None) -> dict[str, Any]:
    with domain_errors():
        job, partner_name = jobs.find_job(session, job_id=job_id)
    after = _index_param(chunks_after)
    chunks, more_chunks = jobs.chunk_page(session, job_id=job.id, after=after, limit=CHUNKS_PER_PAGE)
    rows = [chunk_row(c) for c in chunks]
    now = datetime.now(UTC)
    return {
        "job": job_row(job, partner_name, now),
        "outcomes": OUTCOMES,
        "chunks": rows,
        "chunks_after": after,
        "more_chunks": _query(chunks_after=rows[-1].chunk_no) if more_chunks and rows else None,
        "errors_by_code": results.errors_by_code(session, job.id),
        "live_query": _query(chunks_after=after),
        "updated_at": now,
    }


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    session: DbSession,
    me: PageOperator,
    job_id: str,
    chunks_after: str | None = None,
    results_after: str | None = None,
    notice: str | None = None,
) -> Response:
    """A job: counts, progress, chunks, errors by code, failed results (paged, downloadable), key, Cancel."""
    context = _job_live_context(session, job_id, chunks_after)
    job: JobRow = context["job"]
    after = _index_param(results_after)
    failed, more_failed = results.results_page(
        session, job.id, outcome="failed", starting_after=after, limit=RESULTS_PER_PAGE
    )
    key = partners.find_key(session, key_id=job.api_key_id) if job.api_key_id else None
    return _page(
        request,
        me,
        "job.html",
        "jobs",
        failed=failed,
        results_after=after,
        more_failed=_query(results_after=failed[-1]["index"]) if more_failed and failed else None,
        key=key,
        notice=NOTICES.get(notice or ""),
        **context,
    )


@router.get("/live/jobs/{job_id}")
def job_live(
    request: Request, session: DbSession, me: LiveOperator, job_id: str, chunks_after: str | None = None
) -> Response:
    return _page(request, me, "_job_live.html", "jobs", **_job_live_context(session, job_id, chunks_after))


def _download_lines(job_id: str, outcome: str | None, fmt: str) -> Iterator[bytes]:
    # The stream's own session: it outlives the route's, until the last line is sent.
    with session_scope() as session:
        if fmt == "csv":
            yield from results.results_csv(session, job_id, outcome=outcome, after=-1)
        else:
            yield from results.results_ndjson(session, job_id, outcome=outcome, after=-1)


def _download(session: Session, job_id: str, outcome: str | None, fmt: str) -> Response:
    outcome = _choice(outcome, OUTCOMES, "outcome")
    with domain_errors():
        job, _ = jobs.find_job(session, job_id=job_id)
    lines = _download_lines(job.id, outcome, fmt)
    # The first lines are read before the answer starts: a database that fails now is an error, not a cut file.
    first = next(lines, b"")

    def body() -> Iterator[bytes]:
        yield first
        yield from lines

    name = f"{job.id}-{outcome or 'all'}.{fmt}"
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        body(),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/jobs/{job_id}/results.ndjson")
def download_ndjson(session: DbSession, _me: LiveOperator, job_id: str, outcome: str | None = None) -> Response:
    """The job's results (those with `outcome`, if given) as NDJSON, exactly as the API streams them."""
    return _download(session, job_id, outcome, "ndjson")


@router.get("/jobs/{job_id}/results.csv")
def download_csv(session: DbSession, _me: LiveOperator, job_id: str, outcome: str | None = None) -> Response:
    """The job's results (those with `outcome`, if given) as CSV (SPEC §4's columns)."""
    return _download(session, job_id, outcome, "csv")


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, session: DbSession, action: AdminAction, job_id: str) -> Response:
    """Cancel any partner's job (admin): as the partner's own `POST /jobs/{id}/cancel` does."""
    with domain_errors():
        job, _ = jobs.find_job(session, job_id=job_id)
        cancelled, to_publish = processing.cancel_job(session, partner_id=job.partner_id, job_id=job.id)

    def announce() -> None:
        log.info(
            "job cancelled by an operator",
            extra={"operator": action.operator.username, "job_id": job.id, "partner_id": job.partner_id},
        )
        # The partner's next waiting job may have been admitted by this cancel: its chunks go out now.
        publish_chunks(to_publish)

    after_commit(session, announce)
    return _redirect(f"{console_base(request)}/jobs/{cancelled.id}?notice=cancelled")


# --- partners --------------------------------------------------------------------------------------------------


def _partners_context(session: Session, after: str | None) -> dict[str, Any]:
    after = _id_param(after, "partner")
    rows, more = partners.partners_page(session, starting_after=after, limit=PARTNERS_PER_PAGE)
    ids = [p.id for p in rows]
    return {
        "partners": rows,
        "totals": jobs.partner_job_totals(session, partner_ids=ids),
        "keys": partners.key_totals(session, partner_ids=ids),
        "outcomes": OUTCOMES,
        "older": _query(after=rows[-1].id) if more and rows else None,
        "live_query": _query(after=after),
        "updated_at": datetime.now(UTC),
    }


@router.get("/partners")
def partners_list(request: Request, session: DbSession, me: PageOperator, after: str | None = None) -> Response:
    """Every partner with its jobs, records and keys."""
    return _page(request, me, "partners.html", "partners", **_partners_context(session, after))


@router.get("/live/partners")
def partners_live(request: Request, session: DbSession, me: LiveOperator, after: str | None = None) -> Response:
    return _page(request, me, "_partners_live.html", "partners", **_partners_context(session, after))


def _partner_live_context(session: Session, partner_id: str) -> dict[str, Any]:
    with domain_errors():
        partner = partners.get_partner(session, partner_id=partner_id)
    now = datetime.now(UTC)
    page = jobs.list_all_jobs(session, partner_id=partner.id, limit=PARTNER_JOBS)
    return {
        "partner": partner,
        "totals": jobs.partner_job_totals(session, partner_ids=[partner.id]).get(partner.id),
        "outcomes": OUTCOMES,
        "rows": [job_row(job, name, now) for job, name in page.jobs],
        "more_jobs": page.has_older,
        "updated_at": now,
    }


@router.get("/partners/{partner_id}")
def partner_page(
    request: Request, session: DbSession, me: PageOperator, partner_id: str, notice: str | None = None
) -> Response:
    """A partner: its jobs, its records by outcome, its keys (last used, Revoke)."""
    context = _partner_live_context(session, partner_id)
    keys = partners.list_keys(session, partner_id=partner_id)
    return _page(request, me, "partner.html", "partners", keys=keys, notice=NOTICES.get(notice or ""), **context)


@router.get("/live/partners/{partner_id}")
def partner_live(request: Request, session: DbSession, me: LiveOperator, partner_id: str) -> Response:
    return _page(request, me, "_partner_live.html", "partners", **_partner_live_context(session, partner_id))


@router.post("/keys/{key_id}/revoke")
def revoke_key(request: Request, session: DbSession, action: AdminAction, key_id: str) -> Response:
    """Revoke a partner's API key (admin), as `pfsync key revoke` does."""
    with domain_errors():
        key = partners.revoke_key(session, key_id=key_id)
    to_publish = processing.cancel_jobs_of_key(session, key_id=key_id)
    partner_id = key.partner_id

    def done() -> None:
        log.info(
            "API key revoked by an operator",
            extra={"operator": action.operator.username, "key_id": key_id, "partner_id": partner_id},
        )
        publish_chunks(to_publish)

    after_commit(session, done)
    return _redirect(f"{console_base(request)}/partners/{partner_id}?notice=revoked")


__all__ = ["SECURITY_HEADERS", "router"]
