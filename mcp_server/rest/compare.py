"""`GET /compare`: the compare_operations tool over HTTP (the dashboard shows the spec fields that
differ between the runs it overlays)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.models import Comparison
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, json_response, parse_query

__all__ = ["CompareQuery", "compare_endpoints"]


class CompareQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_ids: list[str] = Field(
        min_length=2,
        max_length=10,
        description="2 to 10 operation ids (repeat the parameter, or separate with commas)",
    )


def compare_endpoints(service: TrainingService) -> list[Endpoint]:
    async def compare(request: Request) -> Response:
        query = parse_query(request, CompareQuery)
        return json_response(await service.compare_operations(query.operation_ids))

    return [
        Endpoint(
            "GET",
            "/compare",
            compare,
            "compare_operations",
            "Runs side by side: the spec fields that differ, each run's best value and epoch, "
            "which run is best (the compare_operations tool)",
            ok=Comparison,
            query=CompareQuery,
            errors=(404, 422),
        )
    ]
