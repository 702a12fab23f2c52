"""Who is signed in to the console, and whether a form really comes from the console (SPEC §10).

- The session cookie holds a random token (core.operators.service keeps only its hash): HttpOnly, SameSite=Strict,
  Path=/console, and Secure when the request came over https — directly, or through a proxy uvicorn trusts
  (`FORWARDED_ALLOW_IPS`, default 127.0.0.1) that says so in `X-Forwarded-Proto`.
- Every action is a POST carrying the session's CSRF token in a hidden field, and, when the browser sends an
  `Origin`, from this very origin; anything else is refused with 403 before the action runs. The sign-in form, which
  has no session yet, is held to the same origin.
- Partner API keys open nothing here (an `Authorization` header is ignored), and the cookie opens nothing in the
  partner API, which knows only HTTP Basic; its path keeps browsers from even sending it there.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from core import logs
from core.db import session_scope
from core.operators.service import OperatorSession, csrf_matches, session_for_token

COOKIE = "pfsync_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


class ConsoleError(Exception):
    """A refusal answered with the console's error page."""

    def __init__(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.headers = headers or {}


class SignInRequired(Exception):
    """No live session: a page sends the browser to the sign-in form, anything else answers 401."""

    def __init__(self, page: bool) -> None:
        super().__init__("sign in first")
        self.page = page


def console_base(request: Request) -> str:
    """The console's path prefix, behind any root path the app is mounted at."""
    return f"{request.scope.get('root_path', '')}{COOKIE_PATH}"


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def session_cookie(request: Request, token: str, max_age: int) -> str:
    """The Set-Cookie value of a new session."""
    secure = "; Secure" if is_https(request) else ""
    return f"{COOKIE}={token}; Path={console_base(request)}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def expired_cookie(request: Request) -> str:
    """The Set-Cookie value that makes the browser forget the session cookie."""
    secure = "; Secure" if is_https(request) else ""
    return f"{COOKIE}=; Path={console_base(request)}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"


def _lookup(token: str) -> OperatorSession | None:
    with session_scope() as session:
        return session_for_token(session, token=token)


async def signed_in_operator(request: Request) -> OperatorSession | None:
    """The session the request's cookie opens, or None; its operator is put in the log context. Async, so that
    the log context set here, in the request's task, reaches the route's thread and the access log."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    signed_in = await run_in_threadpool(_lookup, token)
    if signed_in is not None:
        logs.operator.set(signed_in.username)
        request.state.operator = signed_in.username
    return signed_in


async def page_operator(request: Request) -> OperatorSession:
    """The signed-in operator of a page; without one, the browser goes to the sign-in form."""
    signed_in = await signed_in_operator(request)
    if signed_in is None:
        raise SignInRequired(page=True)
    return signed_in


async def live_operator(request: Request) -> OperatorSession:
    """The signed-in operator of a live fragment or a download; without one, 401."""
    signed_in = await signed_in_operator(request)
    if signed_in is None:
        raise SignInRequired(page=False)
    return signed_in


def check_origin(request: Request) -> None:
    """403 when the browser says the request comes from another origin (or from none it will name)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own:
        raise ConsoleError(403, "Forbidden", "This form was not sent from the console's own pages.")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form (the last value of a repeated one); 403 for another kind of body or one
    over 16 KiB, since no console form sends one."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise ConsoleError(403, "Forbidden", "Console actions are sent by the console's own forms.")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_FORM_BYTES:
            raise ConsoleError(413, "Content Too Large", "The form is too large.")
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=32, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(400, "Bad Request", "The form could not be read.") from None
    return dict(pairs)


@dataclass(frozen=True, slots=True)
class Action:
    """A checked console action: who sends it, and its form."""

    operator: OperatorSession
    form: dict[str, str]


async def console_action(request: Request) -> Action:
    """An action of a signed-in operator: from this origin, with the session's CSRF token, or 403."""
    signed_in = await signed_in_operator(request)
    if signed_in is None:
        raise SignInRequired(page=False)
    check_origin(request)
    form = await read_form(request)
    if not csrf_matches(signed_in, form.get(CSRF_FIELD)):
        raise ConsoleError(
            403, "Forbidden", "The form's security token is missing or out of date: reload the page and try again."
        )
    return Action(signed_in, form)


async def admin_action(action: Annotated[Action, Depends(console_action)]) -> Action:
    """A checked action of an operator with the `admin` role, or 403."""
    if not action.operator.is_admin:
        raise ConsoleError(403, "Forbidden", f"Only an admin may do this; {action.operator.username} is a viewer.")
    return action


PageOperator = Annotated[OperatorSession, Depends(page_operator)]
LiveOperator = Annotated[OperatorSession, Depends(live_operator)]
ConsoleAction = Annotated[Action, Depends(console_action)]
AdminAction = Annotated[Action, Depends(admin_action)]
