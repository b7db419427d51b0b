"""The MCP server: tools, resources and prompts over the training service. Thin edges only:
parse, call one service function, shape nothing by hand (the service returns shared models)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_server import __version__
from mcp_server.core.errors import NotFoundError, ServiceError
from mcp_server.core.models import (
    Comparison,
    OperationInfo,
    OperationList,
    OperationMetrics,
    StartTrainingArgs,
    StartTrainingResult,
    WaitResult,
)
from mcp_server.core.service import MAX_WAIT_S, TrainingService
from mcp_server.prompt_files import load_prompt_files, to_mcp_prompt
from mcp_server.subscriptions import OPERATIONS_URI, Subscriptions
from storage import Operation, OperationStatus
from trainer.analysis import AnalysisParams, LossAnalysis

__all__ = ["INSTRUCTIONS", "build_mcp_server"]

INSTRUCTIONS = """\
training-mcp runs real PyTorch trainings and lets you watch, judge and steer them.
Workflow: start_training (returns an operation_id at once; {} runs a small demo) ->
wait_for_operation (blocks until new epochs, up to 55 s, and returns them) or
get_operation_metrics with the returned next_cursor (only what is new) -> analyze_loss (verdict,
recommendation, reasons with numbers) -> stop_training when it recommends stopping.
compare_operations and plot_metrics compare runs. Resources training://operations/{id}/metrics
and .../analysis update every epoch if your client subscribes.
"""

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
OperationId = Annotated[str, Field(description="The id start_training returned, e.g. op-k3f9x2ab")]


@contextmanager
def _client_errors() -> Iterator[None]:
    """A service error becomes an isError result that names the field; nothing else leaks."""
    try:
        yield
    except ServiceError as exc:
        raise ToolError(exc.message) from exc


def _flat_signature(model: type[StartTrainingArgs], returns: type[Any]) -> inspect.Signature:
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=Annotated[field.annotation, Field(description=field.description)]
            if field.description
            else field.annotation,
        )
        for name, field in model.model_fields.items()
    ]
    return inspect.Signature(params, return_annotation=returns)


def build_mcp_server(service: TrainingService) -> MCPServer:
    bus = InMemorySubscriptionBus()
    mcp = MCPServer(
        "training-mcp",
        title="training-mcp",
        instructions=INSTRUCTIONS,
        version=__version__,
        subscriptions=bus,
    )
    subscriptions = Subscriptions(mcp, bus)
    service.notifier.listen(subscriptions.on_change)
    _add_tools(mcp, service)
    _add_resources(mcp, service)
    for prompt in load_prompt_files():
        mcp.add_prompt(to_mcp_prompt(prompt))
    return mcp


def _add_tools(mcp: MCPServer, service: TrainingService) -> None:
    async def start_training(**arguments: Any) -> StartTrainingResult:
        with _client_errors():
            return await service.start_training(StartTrainingArgs(**arguments))

    start_training.__signature__ = _flat_signature(  # type: ignore[attr-defined]
        StartTrainingArgs, StartTrainingResult
    )
    mcp.add_tool(
        start_training,
        name="start_training",
        description=(
            "Start a real PyTorch training run and return at once with its operation_id, status "
            "and the resource URIs to watch. Every argument is optional: {} trains the default "
            "demo (an MLP on the small noisy 'noisy_spirals' set, which overfits). Pass flat "
            "arguments (dataset, hidden_sizes, epochs, learning_rate, ...) or a full `spec`. "
            "Runs beyond the server's concurrency limit are queued. Next: wait_for_operation."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )

    @mcp.tool(annotations=READ_ONLY)
    async def get_operation(operation_id: OperationId) -> OperationInfo:
        """Status, spec, progress (epochs_done of epochs_total), timing, error or stop reason and
        the latest value of every metric of one run. Cheap: call it whenever you need the state."""
        with _client_errors():
            return await service.get_operation(operation_id)

    @mcp.tool(annotations=READ_ONLY)
    async def list_operations(
        status: Annotated[
            OperationStatus | None, Field(description="Only runs in this status")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many")] = 20,
    ) -> OperationList:
        """Runs, newest first, optionally only those in one status (queued, running, completed,
        failed, cancelled, interrupted)."""
        with _client_errors():
            return await service.list_operations(status, limit)

    @mcp.tool(annotations=READ_ONLY)
    async def get_operation_metrics(
        operation_id: OperationId,
        metrics: Annotated[
            list[str] | None,
            Field(
                description="Metric names; default train/val loss and accuracy and "
                "learning_rate; ['all'] for every epoch metric"
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            Field(description="next_cursor from your previous call: only newer points come back"),
        ] = None,
        last_epochs: Annotated[int | None, Field(description="Only the last N epochs")] = None,
        max_points: Annotated[
            int,
            Field(
                ge=4,
                le=10_000,
                description="Per metric; longer series are downsampled "
                "keeping each bucket's min, max and last point",
            ),
        ] = 100,
        include_steps: Annotated[bool, Field(description="Add the per-step training loss")] = False,
    ) -> OperationMetrics:
        """A run's metric history, compactly: per metric, columnar steps (epochs) and values,
        with total vs returned counts (nothing is dropped silently), the next_cursor for
        incremental reads, the run's status and trend indicators (best epoch, epochs since
        improvement, overfitting, plateau, diverging). Non-finite values are null and listed in
        non_finite."""
        with _client_errors():
            return await service.get_metrics(
                operation_id,
                metrics=metrics,
                cursor=cursor,
                last_epochs=last_epochs,
                max_points=max_points,
                include_steps=include_steps,
            )

    @mcp.tool(annotations=READ_ONLY)
    async def analyze_loss(
        operation_id: OperationId,
        monitor: Annotated[
            str | None,
            Field(
                description="Metric to judge, default val_loss "
                "(train_loss when there is no validation)"
            ),
        ] = None,
        mode: Annotated[
            Literal["auto", "min", "max"] | None, Field(description="auto: max for accuracies")
        ] = None,
        min_delta: Annotated[
            float | None, Field(description="Smallest change that counts as improvement")
        ] = None,
        patience: Annotated[
            int | None, Field(description="Epochs without improvement before 'plateau'")
        ] = None,
        window: Annotated[int | None, Field(description="Epochs in the trend window")] = None,
        gl_alpha: Annotated[float | None, Field(description="Prechelt GL threshold, %")] = None,
        pq_alpha: Annotated[float | None, Field(description="Prechelt PQ threshold")] = None,
        pq_strip_k: Annotated[int | None, Field(description="Prechelt strip length k")] = None,
        up_strips: Annotated[int | None, Field(description="Prechelt UP s")] = None,
        divergence_factor: Annotated[
            float | None, Field(description="Loss rising by more than this factor means diverging")
        ] = None,
    ) -> LossAnalysis:
        """Judge a run from its whole history: best epoch, epochs since improvement, trend,
        generalisation gap, flags with evidence (overfitting, plateau, divergence, oscillation),
        Prechelt GL/PQ/UP and patience criteria, a verdict, and a recommendation (continue,
        stop_and_restore_best, reduce_learning_rate, add_regularization, investigate_divergence,
        wait_for_more_epochs) with a confidence and reasons that quote the numbers."""
        given = {
            k: v
            for k, v in {
                "monitor": monitor,
                "mode": mode,
                "min_delta": min_delta,
                "patience": patience,
                "window": window,
                "gl_alpha": gl_alpha,
                "pq_alpha": pq_alpha,
                "pq_strip_k": pq_strip_k,
                "up_strips": up_strips,
                "divergence_factor": divergence_factor,
            }.items()
            if v is not None
        }
        with _client_errors():
            params = _analysis_params(given)
            return await service.analyze(operation_id, params)

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    async def stop_training(
        operation_id: OperationId,
        reason: Annotated[
            str | None, Field(max_length=500, description="Why; recorded on the run")
        ] = None,
    ) -> Operation:
        """Stop a queued or running run cooperatively (within one batch); the epochs it finished
        are kept and the reason is recorded. Returns the run, normally already 'cancelled'."""
        with _client_errors():
            return await service.stop_training(operation_id, reason)

    @mcp.tool(annotations=READ_ONLY)
    async def wait_for_operation(
        operation_id: OperationId,
        ctx: Context,
        until: Annotated[
            Literal["next_epoch", "epochs", "end"],
            Field(
                description="Return after the next epoch, after `epochs` more "
                "epochs, or when the run ends"
            ),
        ] = "next_epoch",
        epochs: Annotated[int, Field(ge=1, description="With until='epochs'")] = 1,
        timeout_s: Annotated[
            float,
            Field(gt=0, le=MAX_WAIT_S, description="Give up after this many seconds (at most 55)"),
        ] = 30.0,
    ) -> WaitResult:
        """Block until the run reaches the point asked for (or ends, or the timeout passes), sending
        progress notifications meanwhile, then return everything new since the call began with the
        trend indicators. The way to follow a run in clients that ignore resource subscriptions:
        call it in a loop."""

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        with _client_errors():
            return await service.wait_for_operation(
                operation_id, until=until, epochs=epochs, timeout_s=timeout_s, progress=progress
            )

    @mcp.tool(annotations=READ_ONLY)
    async def compare_operations(
        operation_ids: Annotated[
            list[str], Field(min_length=2, max_length=10, description="2 to 10 operation ids")
        ],
    ) -> Comparison:
        """Compare runs side by side: the spec fields that differ, each run's best value and epoch
        of best, final values and time per epoch, and which run is best."""
        with _client_errors():
            return await service.compare_operations(operation_ids)

    @mcp.tool(annotations=READ_ONLY, structured_output=False)
    async def plot_metrics(
        operation_ids: Annotated[
            list[str], Field(min_length=1, max_length=10, description="1 to 10 operation ids")
        ],
        metrics: Annotated[list[str], Field(min_length=1, description="Metrics to draw")] = [  # noqa: B006
            "train_loss",
            "val_loss",
        ],
    ) -> list[Any]:
        """A PNG image of the runs' curves (losses and accuracies on separate axes, each run's best
        epoch marked) and one line of text summarising each run."""
        with _client_errors():
            png, caption = await service.plot(operation_ids, metrics)
        return [caption, Image(data=png, format="png")]


def _analysis_params(given: dict[str, Any]) -> AnalysisParams:
    from pydantic import ValidationError

    from mcp_server.core.errors import from_validation_error

    try:
        return AnalysisParams(**given)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def _add_resources(mcp: MCPServer, service: TrainingService) -> None:
    async def _json(coro: Any) -> str:
        try:
            model = await coro
        except NotFoundError as exc:
            raise ResourceNotFoundError(exc.message) from exc
        text: str = model.model_dump_json(indent=1)
        return text

    @mcp.resource(
        OPERATIONS_URI,
        name="operations",
        mime_type="application/json",
        description="The 50 newest runs with their status and progress.",
    )
    async def operations() -> str:
        return await _json(service.list_operations(limit=50))

    @mcp.resource(
        OPERATIONS_URI + "/{operation_id}",
        name="operation",
        mime_type="application/json",
        description="One run: status, spec, progress and latest metric values.",
    )
    async def operation(operation_id: str) -> str:
        return await _json(service.get_operation(operation_id))

    @mcp.resource(
        OPERATIONS_URI + "/{operation_id}/metrics",
        name="operation_metrics",
        mime_type="application/json",
        description="A run's epoch metrics (compact, downsampled past 100 points) and "
        "trend indicators. Updated every epoch.",
    )
    async def operation_metrics(operation_id: str) -> str:
        return await _json(service.get_metrics(operation_id))

    @mcp.resource(
        OPERATIONS_URI + "/{operation_id}/analysis",
        name="operation_analysis",
        mime_type="application/json",
        description="analyze_loss with default parameters. Updated every epoch.",
    )
    async def operation_analysis(operation_id: str) -> str:
        return await _json(service.analyze(operation_id))
