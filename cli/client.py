"""The HTTP client of the integrator commands (`pfsync push`, `pfsync jobs`): where the service is, who calls it.

The service and the credentials come from `--url/--key/--secret`, else `PFSYNC_URL`, `PFSYNC_KEY` and
`PFSYNC_SECRET` (from the environment or a `.env` file in the current folder). Every failure to get an answer
becomes a `ServiceError` (exit status 3) that says what the service said, or why it could not be reached; a
request the service asks to come back later (429 or 503 with `Retry-After`) is sent again after that time.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from cli.output import ServiceError, UsageError

DEFAULT_URL = "http://127.0.0.1:8000"
# Reads answer in milliseconds; a batch POST is answered only once every record is stored, which can take a while.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=600.0)
# How long a command keeps honouring `Retry-After` (429 over budget, 503 overloaded) before it gives up.
RETRY_WINDOW_SECONDS = 120.0


class ClientSettings(BaseSettings):
    """Where the service is and the API key to call it with (the service's own settings are core.config's)."""

    model_config = SettingsConfigDict(env_prefix="PFSYNC_", env_file=".env", extra="ignore")

    url: str = DEFAULT_URL
    key: str | None = None
    secret: str | None = None


def _user_agent() -> str:
    try:
        return f"pfsync/{version('pocketflows-sync')}"
    except PackageNotFoundError:
        return "pfsync"


@contextmanager
def open_client(args: argparse.Namespace) -> Iterator[httpx.Client]:
    """An HTTP client for the service named by the flags or the environment, authenticated with the API key."""
    configured = ClientSettings()
    url = (args.url or configured.url).rstrip("/")
    key = args.key or configured.key
    secret = args.secret or configured.secret
    if not key or not secret:
        raise UsageError(
            "no API key: pass --key and --secret, or set PFSYNC_KEY and PFSYNC_SECRET "
            "(`pfsync partner create` prints a key id and its secret)"
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url / PFSYNC_URL must be an http:// or https:// URL, not {url!r}")
    with httpx.Client(
        base_url=url, auth=(key, secret), timeout=TIMEOUT, headers={"User-Agent": _user_agent()}
    ) as client:
        yield client


def unreachable(client: httpx.Client, exc: httpx.TransportError) -> ServiceError:
    """The error for a request that got no answer."""
    reason = str(exc) or type(exc).__name__
    return ServiceError(
        f"cannot reach the service at {client.base_url} ({reason}); is it running? Set --url or PFSYNC_URL.",
        retryable=True,
    )


def refusal(response: httpx.Response) -> ServiceError:
    """The error for a 4xx or 5xx answer: its problem's code and detail."""
    try:
        problem: Any = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict) and problem.get("detail"):
        code = problem.get("code") or response.reason_phrase
        message = f"the service refused the request ({response.status_code} {code}): {problem['detail']}"
    else:
        message = f"the service answered {response.status_code} {response.reason_phrase}"
    return ServiceError(message, retryable=response.status_code >= 500)


def retry_delay(response: httpx.Response) -> float | None:
    """How long the service asked us to wait before trying again (429 over budget or too many uploads, 503
    overloaded, each with `Retry-After` in seconds), or None when the answer is final."""
    if response.status_code not in (429, 503):
        return None
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    # Never sooner than asked; a little later at random, so that clients refused together do not return together.
    return max(0.0, seconds) + random.uniform(0, 0.25)


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    content: Callable[[], Iterable[bytes]] | bytes | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request; a 2xx answer, or a `ServiceError`. A 429 or 503 with `Retry-After` is sent again once that
    time has passed, for up to RETRY_WINDOW seconds in all. `content`, when not bytes, makes the body anew for
    each attempt."""
    deadline = time.monotonic() + RETRY_WINDOW_SECONDS
    while True:
        body = content() if callable(content) else content
        try:
            response = client.request(method, url, content=body, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(client, exc) from None
        delay = retry_delay(response)
        if delay is not None and time.monotonic() + delay <= deadline:
            time.sleep(delay)
            continue
        if response.status_code >= 400:
            raise refusal(response)
        return response


def get_json(client: httpx.Client, url: str, **params: Any) -> Any:
    """GET a JSON document."""
    query = {name: value for name, value in params.items() if value is not None}
    return call(client, "GET", url, params=query).json()
