"""The REST mirror under /api/v1 (issue 6 fills it in)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_server import __version__
from mcp_server.service import TrainingService

__all__ = ["OPEN_PATHS", "rest_routes"]

OPEN_PATHS = frozenset({"/api/v1/health"})


def rest_routes(service: TrainingService) -> list[Route]:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "version": __version__, "runs_active": service.runner.active}
        )

    return [Route("/api/v1/health", health, methods=["GET"])]
