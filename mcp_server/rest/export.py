"""The streaming export route: a run's whole metric history as JSON lines, CSV, Parquet or Arrow."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mcp_server.core.export import MEDIA_TYPES
from mcp_server.core.queries import ExportQuery
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, parse_query

__all__ = ["export_endpoints"]

logger = logging.getLogger(__name__)


def export_endpoints(service: TrainingService) -> list[Endpoint]:
    async def export(request: Request) -> Response:
        query = parse_query(request, ExportQuery)
        operation_id: str = request.path_params["operation_id"]
        stream = await service.export_metrics(operation_id, query)
        filename = f"{operation_id}-metrics.{query.format}"
        return StreamingResponse(
            _said_if_it_fails(stream, operation_id),
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


async def _said_if_it_fails(
    stream: AsyncIterator[bytes], operation_id: str
) -> AsyncIterator[bytes]:
    """The export's bytes; a failure half way is logged in one line and raised on, so the server
    cuts the response short of its last chunk: the one sign a client can tell from the end of a
    whole export (`training_mcp.history` raises `export_interrupted` on it)."""
    sent = 0
    try:
        async for part in stream:
            sent += len(part)
            yield part
    except Exception as exc:
        logger.error("export of %s stopped after %d bytes: %r", operation_id, sent, exc)
        raise
