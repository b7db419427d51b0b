"""The MCP tools and resource of sweeps: start_sweep, get_sweep, enqueue_sweep_trial and
training://sweeps/{sweep_id}. Thin edges over `TrainingService`; registered with one call."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import Field, ValidationError

from mcp_server.core.errors import NotFoundError, ServiceError, from_validation_error
from mcp_server.core.service import TrainingService
from mcp_server.core.sweep_space import SweepRequest
from mcp_server.core.sweeps import Sweep, SweepStarted
from mcp_server.tool_models import CREATES, READ_ONLY

__all__ = ["SWEEPS_URI", "register_sweeps"]

SWEEPS_URI = "training://sweeps"
_F = SweepRequest.model_fields
SweepId = Annotated[str, Field(description="The id start_sweep returned, e.g. sw-1a2b3c4d")]


def _described(name: str) -> Any:
    return Field(description=_F[name].description)


def register_sweeps(mcp: MCPServer, service: TrainingService) -> None:
    @mcp.tool(annotations=CREATES)
    async def start_sweep(
        space: Annotated[dict[str, dict[str, Any]], _described("space")],
        base: Annotated[dict[str, Any] | None, _described("base")] = None,
        trials: Annotated[int, Field(ge=1, le=1000, description="Trials to run in all")] = 12,
        parallel: Annotated[int, _described("parallel")] = 2,
        sampler: Literal["tpe", "random", "grid"] = "tpe",
        pruner: Annotated[
            Literal["hyperband", "median", "analysis", "none"], _described("pruner")
        ] = "hyperband",
        budget: Annotated[int | None, _described("budget")] = None,
        seed: Annotated[int | None, _described("seed")] = None,
        name: str | None = None,
    ) -> SweepStarted:
        """Start an Optuna hyperparameter sweep; returns its sweep_id at once. Trials are
        ordinary runs; pruned ones are stopped with the pruner's reason. Then get_sweep."""
        try:
            request = SweepRequest.model_validate(
                {
                    "space": space,
                    "base": base or {},
                    "trials": trials,
                    "parallel": parallel,
                    "sampler": sampler,
                    "pruner": pruner,
                    "budget": budget,
                    "seed": seed,
                    "name": name,
                }
            )
            return await service.start_sweep(request)
        except ValidationError as exc:
            raise ToolError(from_validation_error(exc).message) from exc
        except ServiceError as exc:
            raise ToolError(exc.message) from exc

    @mcp.tool(annotations=READ_ONLY)
    async def get_sweep(sweep_id: SweepId) -> Sweep:
        """A sweep's status, trial counts, leaderboard, importances and best run."""
        try:
            return await service.get_sweep(sweep_id)
        except ServiceError as exc:
            raise ToolError(exc.message) from exc

    @mcp.tool(annotations=CREATES)
    async def enqueue_sweep_trial(
        sweep_id: SweepId,
        params: Annotated[
            dict[str, Any], Field(description="A value for each parameter of the sweep's space")
        ],
    ) -> Sweep:
        """Propose your own trial (a value per parameter of the space); it is trained next."""
        try:
            return await service.enqueue_sweep_trial(sweep_id, params)
        except ServiceError as exc:
            raise ToolError(exc.message) from exc

    @mcp.resource(
        SWEEPS_URI + "/{sweep_id}",
        name="sweep",
        mime_type="application/json",
        description="A sweep (get_sweep). Updated as its trials report epochs and end.",
    )
    async def sweep(sweep_id: str) -> str:
        try:
            model = await service.get_sweep(sweep_id)
        except NotFoundError as exc:
            raise ResourceNotFoundError(exc.message) from exc
        return model.model_dump_json()
