"""The web view: a task list, a create-and-run form and a live task page, at ``/ui``.

Plain HTML, CSS and JavaScript shipped in ``static/`` (package data): no build step, no CDN. The page
talks to the same API as every client (``fetch`` with a streaming reader of the NDJSON stream), so it
needs nothing of the server but these files. ``/`` redirects here.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

#: The only files served, with their media types (nothing else under static/ is reachable).
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "list.js": "text/javascript; charset=utf-8",
    "events.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Scripts and styles from this server only, no inline script, no plugins, no framing: even a
#: rendering mistake in the report could not run someone else's code.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/favicon.ico")
async def favicon() -> Response:
    # Browsers ask for /favicon.ico whatever the page says; an SVG answers them all (no 404 in the log).
    return _asset("favicon.svg")


@router.get("/ui")
async def index() -> Response:
    return _asset("index.html")


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no such file: {name}")
    return _asset(name)
