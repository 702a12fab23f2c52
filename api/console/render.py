"""Server-rendered pages: the Jinja2 environment, the filters the templates use, and the headers of every page.

Every page and fragment comes from the templates in api/console/templates/, and every asset from
api/console/static/: nothing is loaded from another host, which the Content-Security-Policy also enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from api.console.auth import console_base

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Scripts, styles, images and form targets from this origin only; no frame may embed the console.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def duration(seconds: float | None) -> str:
    """A length of time for people: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`; `—` for none."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def moment(value: datetime | None) -> str:
    """A timestamp in UTC to the second, `2026-12-02 17:05:03Z`; `—` for none."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short_moment(value: datetime | None) -> str:
    """A timestamp for a table cell: the time of day for today (UTC), else the date and the minute."""
    if value is None:
        return "—"
    value = value.astimezone(UTC)
    if value.date() == datetime.now(UTC).date():
        return value.strftime("%H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M")


def iso(value: datetime | None) -> str:
    """RFC 3339 in UTC, for `<time datetime>`."""
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def number(value: int | float | None) -> str:
    """A count with thin spaces between thousands (`1 000 000`); a rate with one decimal below 100."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}" if value < 100 else f"{round(value):,}".replace(",", "\u202f")
    return f"{int(value):,}".replace(",", "\u202f")


environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def plural(count: int | None, singular: str, many: str | None = None) -> str:
    """`1 process`, `2 processes`."""
    word = singular if count == 1 else (many or singular + "s")
    return f"{number(count)} {word}"


environment.filters.update(
    duration=duration, moment=moment, short_moment=short_moment, iso=iso, number=number, plural=plural
)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A template rendered as a page (or fragment) with the console's security headers."""
    base = console_base(request)
    html = environment.get_template(template).render(
        base=base, static=f"{base}/static", path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
