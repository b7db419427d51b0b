"""The streaming export route: a run's whole metric history as JSON lines, CSV, Parquet or Arrow."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mcp_server.core.export import MEDIA_TYPES
from mcp_server.core.queries import ExportQuery
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, parse_query

__all__ = ["export_endpoints"]


def export_endpoints(service: TrainingService) -> list[Endpoint]:
    async def export(request: Request) -> Response:
        query = parse_query(request, ExportQuery)
        operation_id: str = request.path_params["operation_id"]
        stream = await service.export_metrics(operation_id, query)
        filename = f"{operation_id}-metrics.{query.format}"
        return StreamingResponse(
            stream,
            media_type=MEDIA_TYPES[query.format],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return [
        Endpoint(
            "GET",
            "/operations/{operation_id}/metrics/export",
            export,
            "export_metrics",
            "Every stored point, exact and streamed, ordered by (name, step): columns name, "
            "step, epoch, value, wall_time; NaN and infinities kept. format=arrow (an Arrow IPC "
            "stream) is the fastest, then parquet",
            ok=MEDIA_TYPES["jsonl"],
            also=(MEDIA_TYPES["csv"], MEDIA_TYPES["parquet"], MEDIA_TYPES["arrow"]),
            query=ExportQuery,
            errors=(404, 422),
            headers={"Content-Disposition": "attachment; filename=<operation_id>-metrics.<fmt>"},
        )
    ]
