"""The REST routes only GPU host bridges call (beside the metrics and status routes they share
with external runs): the heartbeat that keeps a bridge run from being declared lost."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.core.service import TrainingService
from mcp_server.rest.http import Endpoint, body_or_empty, json_response, parse_body, read_json
from storage import Operation

__all__ = ["Heartbeat", "bridge_endpoints"]


class Heartbeat(BaseModel):
    """A bridge's sign of life for one run. Empty: arriving is the message."""

    model_config = ConfigDict(extra="forbid")


def bridge_endpoints(service: TrainingService) -> list[Endpoint]:
    async def heartbeat(request: Request) -> Response:
        parse_body(Heartbeat, body_or_empty(await read_json(request, required=False)))
        operation_id: str = request.path_params["operation_id"]
        pusher = request.headers.get(PUSH_TOKEN_HEADER)
        return json_response(await service.bridge_heartbeat(operation_id, pusher))

    return [
        Endpoint(
            "POST",
            "/operations/{operation_id}/heartbeat",
            heartbeat,
            "heartbeat",
            "A bridge (or an external run) says the run is alive; a bridge run silent for the "
            "heartbeat timeout is failed as 'bridge lost'. 409 once the run has ended here: "
            "stop training it",
            ok=Operation,
            body=Heartbeat,
            body_required=False,
            errors=(404, 409, 413, 422),
        )
    ]
