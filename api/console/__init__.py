"""The operator console (SPEC §10): the service's own web pages for the people who run it, at /console/.

Pages are rendered on the server (Jinja2, api/console/templates/); a small script of our own
(api/console/static/console.js) refreshes their live parts. Every asset is served from /console/static/.
"""

from __future__ import annotations

import urllib.parse

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.console import pages
from api.console.auth import ConsoleError, SignInRequired, console_base
from api.console.render import STATIC, render


def install(app: FastAPI) -> None:
    """Serve the console's pages under /console/ and its assets under /console/static/."""
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(pages.router)

    @app.exception_handler(SignInRequired)
    async def _sign_in_required(request: Request, exc: SignInRequired) -> Response:
        if exc.page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            query = urllib.parse.urlencode({"next": target})
            return RedirectResponse(
                f"{console_base(request)}/login?{query}", 303, headers={"Cache-Control": "no-store"}
            )
        message = "Sign in to the console first (your session ended, or you signed out)."
        return render(request, "error.html", {"me": None, "title": "Sign in first", "message": message}, status=401)

    @app.exception_handler(ConsoleError)
    async def _refused(request: Request, exc: ConsoleError) -> Response:
        context = {"me": None, "title": exc.title, "message": exc.message}
        return render(request, "error.html", context, status=exc.status, headers=exc.headers)
