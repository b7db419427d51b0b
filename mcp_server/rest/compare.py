"""`GET /compare`: the compare_operations tool over HTTP (the dashboard shows the spec fields that
differ between the runs it overlays)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.models import Comparison
from mcp_server.core.queries import CompareQuery
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, json_response, parse_query

__all__ = ["compare_endpoints"]


def compare_endpoints(service: TrainingService) -> list[Endpoint]:
    async def compare(request: Request) -> Response:
        query = parse_query(request, CompareQuery)
        return json_response(await service.compare_operations(query))

    return [
        Endpoint(
            "GET",
            "/compare",
            compare,
            "compare_operations",
            "Runs side by side: the spec fields that differ, each run's best value and epoch, "
            "which run is best (the compare_operations tool; operation_ids repeated or "
            "comma-separated)",
            ok=Comparison,
            query=CompareQuery,
            errors=(404, 422),
        )
    ]
