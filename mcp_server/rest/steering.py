"""The REST routes that steer runs: fork one from a checkpoint, resume one from its last."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from mcp_server.core.models import StartTrainingResult
from mcp_server.core.service import TrainingService
from mcp_server.core.steering import ForkRequest, ForkResult
from mcp_server.rest.http import Endpoint, json_response, parse_body, read_json

__all__ = ["ResumeRequest", "steering_endpoints"]


class ResumeRequest(BaseModel):
    """Empty: the run resumes from its last checkpoint as it was specified."""

    model_config = ConfigDict(extra="forbid")


def steering_endpoints(service: TrainingService, prefix: str) -> list[Endpoint]:
    def started(result: StartTrainingResult) -> Response:
        location = f"{prefix}/operations/{result.operation_id}"
        return json_response(result, 202, {"Location": location})

    async def fork(request: Request) -> Response:
        body = parse_body(ForkRequest, await read_json(request, required=False) or {})
        operation_id: str = request.path_params["operation_id"]
        return started(await service.fork_training(operation_id, body))

    async def resume(request: Request) -> Response:
        parse_body(ResumeRequest, await read_json(request, required=False) or {})
        operation_id: str = request.path_params["operation_id"]
        return started(await service.resume_training(operation_id))

    ops = "/operations/{operation_id}"
    return [
        Endpoint(
            "POST",
            f"{ops}/fork",
            fork,
            "fork_training",
            "A new run from one of this run's checkpoints with changed hyperparameters; epochs "
            "continue from the fork point (the fork_training tool)",
            ok_status=202,
            ok=ForkResult,
            body=ForkRequest,
            body_required=False,
            errors=(404, 409, 413, 422),
            headers={"Location": "The new operation's URL"},
        ),
        Endpoint(
            "POST",
            f"{ops}/resume",
            resume,
            "resume_training",
            "Continue an interrupted or failed run from its last checkpoint, in the same "
            "operation (the resume_training tool)",
            ok_status=202,
            ok=StartTrainingResult,
            body=ResumeRequest,
            body_required=False,
            errors=(404, 409, 413, 422),
            headers={"Location": "The operation's URL"},
        ),
    ]
