"""The browser dashboard's routes: `/` (every run) and `/runs/{id}` (one run selected).

The pages carry no data, only the app: it reads everything through the REST mirror with the
token the person types in, so the pages themselves are served without one. A strict CSP keeps
the page to its own origin (no CDN, nothing fetched from elsewhere).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from mcp_server.dashboard.assets import render_page

__all__ = ["PAGE_PATHS", "PAGE_PREFIXES", "dashboard_routes"]

PAGE_PATHS = frozenset({"/"})
PAGE_PREFIXES = ("/runs/",)

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def dashboard_routes() -> list[BaseRoute]:
    """The page routes; mount them before the catch-all MCP mount."""
    page = render_page("browser", title="training-mcp")

    async def show(_request: Request) -> Response:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    return [
        Route("/", show, methods=["GET"]),
        Route("/runs/{operation_id}", show, methods=["GET"]),
    ]
