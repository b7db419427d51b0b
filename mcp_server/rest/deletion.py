"""`DELETE /operations/{id}`: delete an ended run with its metrics, push credential, checkpoints
and logs (a queued or running run is refused with 409 naming its status: stop it first)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.deletion import DeletedOperation
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, json_response

__all__ = ["deletion_endpoints"]


def deletion_endpoints(service: TrainingService) -> list[Endpoint]:
    async def delete_operation(request: Request) -> Response:
        operation_id: str = request.path_params["operation_id"]
        return json_response(await service.delete_operation(operation_id))

    return [
        Endpoint(
            "DELETE",
            "/operations/{operation_id}",
            delete_operation,
            "delete_operation",
            "Delete an ended run: its metrics, push credential, checkpoints and logs (a run "
            "forked from it keeps its copied history); 409 while it is queued or running",
            ok=DeletedOperation,
            errors=(404, 409),
        )
    ]
