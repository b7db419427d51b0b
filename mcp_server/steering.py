"""The MCP tools that steer finished or broken runs: fork_training and resume_training.
Thin edges over `TrainingService`; registered by `build_mcp_server` with one call."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from mcp_server.core.errors import ServiceError, from_validation_error
from mcp_server.core.models import StartTrainingResult
from mcp_server.core.service import TrainingService
from mcp_server.core.steering import ForkRequest, ForkResult, FromEpoch
from mcp_server.tool_models import CREATES, OperationId

__all__ = ["register_steering"]

_FIELDS = ForkRequest.model_fields


def register_steering(mcp: MCPServer, service: TrainingService) -> None:
    @mcp.tool(annotations=CREATES)
    async def fork_training(
        operation_id: OperationId,
        from_epoch: Annotated[FromEpoch, Field(description=_FIELDS["from_epoch"].description)] = (
            "best"
        ),
        changes: Annotated[
            dict[str, Any] | None, Field(description=_FIELDS["changes"].description)
        ] = None,
    ) -> ForkResult:
        """A new run from a checkpoint of a local or bridge run, with changed hyperparameters,
        or of a script run (entry point) whose script saved checkpoints, with changed declared
        parameters; epochs continue from there and the parent's history is copied in. Make
        analyze_loss's next_call with it. Returns the new operation_id at once."""
        try:
            request = ForkRequest(from_epoch=from_epoch, changes=changes or {})
            return await service.fork_training(operation_id, request)
        except ValidationError as exc:
            raise ToolError(from_validation_error(exc).message) from exc
        except ServiceError as exc:
            raise ToolError(exc.message) from exc

    @mcp.tool(annotations=CREATES)
    async def resume_training(operation_id: OperationId) -> StartTrainingResult:
        """Continue an interrupted or failed local or bridge run from its last checkpoint, in
        the same operation; a script run reruns its entry point with the same parameters, told
        to go on from its last saved checkpoint. Returns at once."""
        try:
            return await service.resume_training(operation_id)
        except ServiceError as exc:
            raise ToolError(exc.message) from exc
