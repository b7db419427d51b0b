"""One contract per request: the tools' input schemas and the REST routes are built from the same
request models, so a range said in a model is the range every door enforces."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mcp import Client
from pydantic import BaseModel
from starlette.applications import Starlette

from mcp_server.core.dashboard import DashboardQuery
from mcp_server.core.queries import (
    MAX_SERIES_POINTS,
    AnalyzeRequest,
    CompareQuery,
    ListQuery,
    MetricsQuery,
    PlotRequest,
    StopRequest,
    WaitQuery,
)
from mcp_server.core.service import TrainingService
from mcp_server.rest.routes import rest_routes

pytestmark = pytest.mark.anyio

TOOL_MODELS: dict[str, type[BaseModel]] = {
    "list_operations": ListQuery,
    "get_operation_metrics": MetricsQuery,
    "analyze_loss": AnalyzeRequest,
    "wait_for_operation": WaitQuery,
    "compare_operations": CompareQuery,
    "plot_metrics": PlotRequest,
    "stop_training": StopRequest,
    "dashboard_updates": DashboardQuery,
}

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "maxLength", "minItems", "maxItems")


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    found = {k: v for k, v in schema.items() if k in _BOUNDS}
    for alternative in schema.get("anyOf", []):
        found.update({k: v for k, v in alternative.items() if k in _BOUNDS})
    return found


async def test_each_tool_takes_exactly_its_request_model_with_its_ranges(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name, model in TOOL_MODELS.items():
        properties = tools[name].input_schema["properties"]
        own = set(properties) - {"operation_id"}
        assert own == set(model.model_fields), name
        schema = model.model_json_schema()["properties"]
        for field, spec in schema.items():
            assert _bounds(properties[field]) == _bounds(spec), (name, field)
            assert properties[field].get("description") == spec.get("description"), (name, field)


async def test_a_range_in_the_model_is_refused_alike_by_the_tool_and_the_route(
    client: Client, service: TrainingService
) -> None:
    started = await client.call_tool("start_training", {"backend": "external"})
    assert started.structured_content is not None
    op = started.structured_content["operation_id"]
    too_many = MAX_SERIES_POINTS + 1
    tool = await client.call_tool(
        "get_operation_metrics", {"operation_id": op, "max_points": too_many}
    )
    assert tool.is_error
    assert "max_points" in str(tool.content[0])
    app = Starlette(routes=rest_routes(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        answer = await http.get(f"/api/v1/operations/{op}/metrics?max_points={too_many}")
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "max_points"
        fine = await http.get(f"/api/v1/operations/{op}/metrics?max_points={MAX_SERIES_POINTS}")
        assert fine.status_code == 200


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"patience": 0}, "patience"),
        ({"window": 10_000}, "window"),
        ({"mode": "sideways"}, "mode"),
    ],
)
async def test_analyze_loss_refuses_what_analysis_params_refuses(
    client: Client, arguments: dict[str, Any], field: str
) -> None:
    started = await client.call_tool("start_training", {"backend": "external"})
    assert started.structured_content is not None
    op = started.structured_content["operation_id"]
    result = await client.call_tool("analyze_loss", {"operation_id": op, **arguments})
    assert result.is_error
    assert field in str(result.content[0])
