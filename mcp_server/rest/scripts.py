"""The REST routes of script runs: the declared entry points, and a run's logs. Starting and
stopping go through `POST /operations` (with `entry_point` and `params`) and `.../cancel`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.entry_points import EntryPointList
from mcp_server.core.logs import LogsQuery, OperationLogs
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, json_response, parse_query

__all__ = ["script_endpoints"]


def script_endpoints(service: TrainingService) -> list[Endpoint]:
    async def entry_points(_request: Request) -> Response:
        return json_response(service.list_entry_points())

    async def logs(request: Request) -> Response:
        query = parse_query(request, LogsQuery)
        operation_id: str = request.path_params["operation_id"]
        return json_response(await service.operation_logs(operation_id, query))

    return [
        Endpoint(
            "GET",
            "/entry-points",
            entry_points,
            "list_entry_points",
            "The training scripts the operator declared (--entry-points), with their parameters",
            ok=EntryPointList,
        ),
        Endpoint(
            "GET",
            "/operations/{operation_id}/logs",
            logs,
            "get_operation_logs",
            "A script run's stdout or stderr: the last `tail` lines, or what came after `cursor`",
            ok=OperationLogs,
            query=LogsQuery,
            errors=(404, 422),
        ),
    ]
