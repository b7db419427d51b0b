"""The REST routes of sweeps: start one, read one, enqueue a trial of your own."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.service import TrainingService
from mcp_server.core.sweep_space import SweepRequest
from mcp_server.core.sweeps import Sweep, SweepStarted
from mcp_server.rest.http import Endpoint, json_response, parse_body, read_json

__all__ = ["TrialRequest", "sweep_endpoints"]


class TrialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(description="A value for each parameter of the sweep's space")


def sweep_endpoints(service: TrainingService, prefix: str) -> list[Endpoint]:
    def sweep_id(request: Request) -> str:
        value: str = request.path_params["sweep_id"]
        return value

    async def start(request: Request) -> Response:
        body = parse_body(SweepRequest, await read_json(request))
        started = await service.start_sweep(body)
        location = f"{prefix}/sweeps/{started.sweep_id}"
        return json_response(started, 202, {"Location": location})

    async def get(request: Request) -> Response:
        return json_response(await service.get_sweep(sweep_id(request)))

    async def enqueue(request: Request) -> Response:
        body = parse_body(TrialRequest, await read_json(request))
        return json_response(await service.enqueue_sweep_trial(sweep_id(request), body.params))

    return [
        Endpoint(
            "POST",
            "/sweeps",
            start,
            "start_sweep",
            "Start a hyperparameter sweep on Optuna (the start_sweep tool); 202 with sweep_id",
            ok_status=202,
            ok=SweepStarted,
            body=SweepRequest,
            errors=(413, 422, 503),
            headers={"Location": "The sweep's URL"},
        ),
        Endpoint(
            "GET",
            "/sweeps/{sweep_id}",
            get,
            "get_sweep",
            "Status, counts, leaderboard, importances and the best trial's operation",
            ok=Sweep,
            errors=(404, 503),
        ),
        Endpoint(
            "POST",
            "/sweeps/{sweep_id}/trials",
            enqueue,
            "enqueue_sweep_trial",
            "Propose a trial with these parameters; it is trained next",
            ok=Sweep,
            body=TrialRequest,
            errors=(404, 409, 413, 422, 503),
        ),
    ]
