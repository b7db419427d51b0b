"""The MCP server: tools, resources and prompts over the training service. Thin edges only:
parse, call one service function, shape nothing by hand (the service returns shared models)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from mcp_server import __version__
from mcp_server.apps import APP_TOOL_META, build_apps
from mcp_server.core.errors import NotFoundError, ServiceError, from_validation_error
from mcp_server.core.models import (
    Comparison,
    OperationInfo,
    OperationList,
    OperationMetrics,
    StartTrainingArgs,
    StartTrainingResult,
    WaitResult,
)
from mcp_server.core.queries import (
    CompareQuery,
    ListQuery,
    MetricsQuery,
    PlotRequest,
    StopRequest,
    WaitQuery,
)
from mcp_server.core.service import TrainingService
from mcp_server.prompt_files import load_prompt_files, to_mcp_prompt
from mcp_server.subscriptions import OPERATIONS_URI, Subscriptions
from storage import Operation
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


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], arguments: dict[str, Any]) -> M:
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolError(from_validation_error(exc).message) from exc


def _parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """A request model's fields as keyword parameters, with their ranges and descriptions, so a
    tool's input schema is the model's: said once, in the model."""
    params = []
    for name, info in model.model_fields.items():
        extra = Field(description=info.description, json_schema_extra=info.json_schema_extra)
        default = (
            inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True)
        )
        annotation = Annotated[info.annotation, *info.metadata, extra]  # type: ignore[name-defined]
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def _signature(
    model: type[BaseModel], returns: Any, *, leading: Sequence[inspect.Parameter] = ()
) -> inspect.Signature:
    return inspect.Signature([*leading, *_parameters(model)], return_annotation=returns)


_OPERATION_ID = inspect.Parameter(
    "operation_id", inspect.Parameter.KEYWORD_ONLY, annotation=OperationId
)
_CTX = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)


def build_mcp_server(service: TrainingService) -> MCPServer:
    bus = InMemorySubscriptionBus()
    mcp = MCPServer(
        "training-mcp",
        title="training-mcp",
        instructions=INSTRUCTIONS,
        version=__version__,
        subscriptions=bus,
        extensions=[build_apps(service)],
    )
    subscriptions = Subscriptions(mcp, bus)
    service.on_change(subscriptions.on_change)
    _add_tools(mcp, service)
    _add_resources(mcp, service)
    for prompt in load_prompt_files():
        mcp.add_prompt(to_mcp_prompt(prompt))
    return mcp


def _add_tools(mcp: MCPServer, service: TrainingService) -> None:
    def add(
        fn: Any,
        signature: inspect.Signature,
        description: str,
        annotations: ToolAnnotations = READ_ONLY,
        *,
        structured_output: bool | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        fn.__signature__ = signature
        mcp.add_tool(
            fn,
            name=fn.__name__,
            description=description,
            annotations=annotations,
            structured_output=structured_output,
            meta=meta,
        )

    async def start_training(**arguments: Any) -> StartTrainingResult:
        with _client_errors():
            return await service.start_training(StartTrainingArgs(**arguments))

    add(
        start_training,
        _signature(StartTrainingArgs, StartTrainingResult),
        "Start a real PyTorch training run and return at once with its operation_id, status "
        "and the resource URIs to watch. Every argument is optional: {} trains the default "
        "demo (an MLP on the small noisy 'noisy_spirals' set, which overfits). Pass flat "
        "arguments (dataset, hidden_sizes, epochs, learning_rate, ...) or a full `spec`. "
        "Runs beyond the server's concurrency limit are queued. Next: wait_for_operation.",
        ToolAnnotations(
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

    async def list_operations(**arguments: Any) -> OperationList:
        with _client_errors():
            return await service.list_operations(_parse(ListQuery, arguments))

    add(
        list_operations,
        _signature(ListQuery, OperationList),
        "Runs, newest first, optionally only those in one status (queued, running, completed, "
        "failed, cancelled, interrupted).",
    )

    async def get_operation_metrics(operation_id: str, **arguments: Any) -> OperationMetrics:
        with _client_errors():
            return await service.get_metrics(operation_id, _parse(MetricsQuery, arguments))

    add(
        get_operation_metrics,
        _signature(MetricsQuery, OperationMetrics, leading=[_OPERATION_ID]),
        "A run's metric history, compactly: per metric, columnar steps (epochs) and values, "
        "with total vs returned counts (nothing is dropped silently), the next_cursor for "
        "incremental reads, the run's status and trend indicators (best epoch, epochs since "
        "improvement, overfitting, plateau, diverging). Non-finite values are null and listed "
        "in non_finite.",
    )

    async def analyze_loss(operation_id: str, **arguments: Any) -> LossAnalysis:
        with _client_errors():
            return await service.analyze(operation_id, _parse(AnalysisParams, arguments))

    add(
        analyze_loss,
        _signature(AnalysisParams, LossAnalysis, leading=[_OPERATION_ID]),
        "Judge a run from its whole history: best epoch, epochs since improvement, trend, "
        "generalisation gap, flags with evidence (overfitting, plateau, divergence, "
        "oscillation), Prechelt GL/PQ/UP and patience criteria, a verdict, and a recommendation "
        "(continue, stop_and_restore_best, reduce_learning_rate, add_regularization, "
        "investigate_divergence, wait_for_more_epochs) with a confidence and reasons that quote "
        "the numbers. forecast.probability: the chance that continuing to epochs_total beats the "
        "best by more than forecast.margin; stop_and_restore_best needs it below 0.2.",
    )

    async def stop_training(operation_id: str, **arguments: Any) -> Operation:
        with _client_errors():
            return await service.stop_training(operation_id, _parse(StopRequest, arguments).reason)

    add(
        stop_training,
        _signature(StopRequest, Operation, leading=[_OPERATION_ID]),
        "Stop a queued or running run cooperatively (within one batch); the epochs it finished "
        "are kept and the reason is recorded. Returns the run, normally already 'cancelled'.",
        ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )

    async def wait_for_operation(operation_id: str, ctx: Context, **arguments: Any) -> WaitResult:
        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        with _client_errors():
            return await service.wait_for_operation(
                operation_id, _parse(WaitQuery, arguments), progress=progress
            )

    add(
        wait_for_operation,
        _signature(WaitQuery, WaitResult, leading=[_OPERATION_ID, _CTX]),
        "Block until the run reaches the point asked for (or ends, or the timeout passes), "
        "sending progress notifications meanwhile, then return everything new since the call "
        "began with the trend indicators. The way to follow a run in clients that ignore "
        "resource subscriptions: call it in a loop.",
    )

    async def compare_operations(**arguments: Any) -> Comparison:
        with _client_errors():
            return await service.compare_operations(_parse(CompareQuery, arguments))

    add(
        compare_operations,
        _signature(CompareQuery, Comparison),
        "Compare runs side by side: the spec fields that differ, each run's best value and epoch "
        "of best, final values and time per epoch, and which run is best.",
    )

    async def plot_metrics(**arguments: Any) -> list[Any]:
        with _client_errors():
            request = _parse(PlotRequest, arguments)
            png, caption = await service.plot(request.operation_ids, request)
        return [caption, Image(data=png, format="png")]

    add(
        plot_metrics,
        _signature(PlotRequest, list[Any]),
        "A PNG image of the runs' curves (losses and accuracies on separate axes, each run's "
        "best epoch marked) and one line of text summarising each run.",
        structured_output=False,
        meta=APP_TOOL_META,  # hosts that render MCP Apps show the live dashboard beside it
    )


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
        return await _json(service.list_operations(ListQuery(limit=50)))

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
