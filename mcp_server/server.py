"""The MCP server: tools, resources and prompts over the training service. Thin edges only:
parse, call one service function, shape nothing by hand (the service returns shared models)."""

from __future__ import annotations

import inspect
from typing import Any

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import BaseModel

from mcp_server import __version__
from mcp_server.apps import APP_TOOL_META, build_apps
from mcp_server.core.entry_points import EntryPointList
from mcp_server.core.errors import NotFoundError
from mcp_server.core.logs import LogsQuery, OperationLogs
from mcp_server.core.models import (
    AnalysisDigest,
    Comparison,
    OperationInfo,
    OperationList,
    OperationMetrics,
    StartTrainingArgs,
    StartTrainingResult,
    WaitResult,
)
from mcp_server.core.queries import (
    AnalyzeRequest,
    CompareQuery,
    ListQuery,
    MetricsQuery,
    PlotRequest,
    StopRequest,
    WaitQuery,
)
from mcp_server.core.service import TrainingService
from mcp_server.prompt_files import load_prompt_files, to_mcp_prompt
from mcp_server.steering import register_steering
from mcp_server.subscriptions import OPERATIONS_URI, Subscriptions
from mcp_server.sweeps import register_sweeps
from mcp_server.tool_args import forbid_unknown_arguments
from mcp_server.tool_models import CREATES, READ_ONLY, OperationId, client_errors, parse, signature
from storage import Operation
from trainer.analysis import LossAnalysis

__all__ = ["INSTRUCTIONS", "build_mcp_server"]

INSTRUCTIONS = """\
training-mcp runs real PyTorch trainings and lets you watch, judge and steer them.
Cheapest workflow: start_training (returns an operation_id at once; {} runs a small demo), then
call wait_for_operation(operation_id) in a loop: it returns a small digest only when something
bears on a decision (verdict or recommendation changed, a flag raised, a stopping criterion fired,
the run ended). Stop looping when status is final or the recommendation is
stop_and_restore_best; then analyze_loss for the reasons, and stop_training if it still runs.
get_operation_metrics gives the curves themselves (pass next_cursor for only what is new);
compare_operations and plot_metrics compare runs.
"""


_OPERATION_ID = inspect.Parameter(
    "operation_id", inspect.Parameter.KEYWORD_ONLY, annotation=OperationId
)
_CTX = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)


def build_mcp_server(service: TrainingService) -> MCPServer:
    bus = InMemorySubscriptionBus()
    mcp = _LeanMCPServer(
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
    register_steering(mcp, service)
    register_sweeps(mcp, service)
    forbid_unknown_arguments(mcp)
    _add_resources(mcp, service)
    for prompt in load_prompt_files():
        mcp.add_prompt(to_mcp_prompt(prompt))
    return mcp


class _LeanMCPServer(MCPServer):
    """Lists tools lean, since an agent reads every byte of tools/list: input schemas keep every
    range and description but no generated titles, no tool lists an output schema, and
    annotations list only the hints that differ from MCP's defaults. Output schemas are optional
    in MCP; the tool's description says what it returns, the text is that answer as compact
    JSON, and the structured content is the whole model. (With sixteen tools, their output
    schemas alone were 7 KB, a third of the budget; the four hints spelt out on every tool,
    another 1.6 KB.)"""

    async def list_tools(self) -> list[MCPTool]:
        return [
            tool.model_copy(
                update={
                    "input_schema": _lean(tool.input_schema, {"title"}),
                    "output_schema": None,
                    "annotations": _lean_hints(tool.annotations),
                }
            )
            for tool in await super().list_tools()
        ]


# MCP's meaning of a hint left out (ToolAnnotations): not read-only, destructive, not idempotent,
# open world. destructive and idempotent mean nothing for a read-only tool.
_HINT_DEFAULTS = {
    "read_only_hint": False,
    "destructive_hint": True,
    "idempotent_hint": False,
    "open_world_hint": True,
}


def _lean_hints(annotations: ToolAnnotations | None) -> ToolAnnotations | None:
    """`annotations` with the hints that say what MCP's defaults say anyway left out."""
    if annotations is None:
        return None
    hints = annotations.model_dump(exclude_none=True)
    if hints.get("read_only_hint"):
        hints.pop("destructive_hint", None)
        hints.pop("idempotent_hint", None)
    kept = {k: v for k, v in hints.items() if _HINT_DEFAULTS.get(k, not v) != v}
    return ToolAnnotations.model_validate(kept)


def _lean(schema: Any, drop: set[str]) -> Any:
    """`schema` without the keywords in `drop` (never a property that happens to share a name)
    or a `null` default, and with `anyOf: [{type: T, ...}, {type: null}]` written as the
    equivalent `type: [T, null]`."""
    if isinstance(schema, list):
        return [_lean(item, drop) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _lean(inner, drop) for name, inner in value.items()}
        elif key not in drop and not (key == "default" and value is None):
            out[key] = _lean(value, drop)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        (other,) = [o for o in options if o != {"type": "null"}]
        if isinstance(other.get("type"), str) and not set(other) & set(out):
            del out["anyOf"]
            out.update(other, type=[other["type"], "null"])
    return out


def _result(
    model: BaseModel, summary: str | None = None, said: frozenset[str] = frozenset()
) -> CallToolResult:
    """Compact text and the whole model as structured content. The text is a plain-language
    line first where it helps, then the JSON (no indentation, no default-valued fields) of what
    the line did not already say (`said`)."""
    text = model.model_dump_json(exclude_defaults=True, exclude=set(said))
    return CallToolResult(
        content=[TextContent(type="text", text=f"{summary}\n{text}" if summary else text)],
        structured_content=model.model_dump(mode="json"),
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _wait_line(result: WaitResult) -> str:
    done = f"epoch {result.epochs_done}/{result.epochs_total or '?'}"
    line = f"{result.operation_id} {result.status.value} at {done} ({result.woke})"
    ind = result.indicators
    if ind is not None:
        line += (
            f"; best {ind.monitor} {_num(ind.best_value)} at epoch {ind.best_epoch}, "
            f"{ind.epochs_since_improvement} since; {ind.verdict}, {ind.recommendation}"
        )
        raised = [
            name
            for name, on in (
                ("overfitting", ind.overfitting),
                ("plateau", ind.plateau),
                ("diverging", ind.diverging),
            )
            if on
        ]
        if raised:
            line += "; flags: " + ", ".join(raised)
    if result.changes:
        line += "; changed: " + "; ".join(result.changes)
    return line


# What the plain-language lines say, left out of the JSON after them.
_WAIT_SAID = frozenset(
    {
        "operation_id",
        "reached",
        "woke",
        "status",
        "epochs_done",
        "epochs_total",
        "indicators",
        "changes",
    }
)
_ANALYSIS_SAID = frozenset({"verdict", "recommendation", "confidence"})


def _analysis_line(digest: AnalysisDigest | LossAnalysis) -> str:
    return f"{digest.verdict}: {digest.recommendation} (confidence {digest.confidence:.2f})"


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

    async def start_training(**arguments: Any) -> CallToolResult:
        with client_errors():
            return _result(await service.start_training(parse(StartTrainingArgs, arguments)))

    add(
        start_training,
        signature(StartTrainingArgs, StartTrainingResult),
        "Start a PyTorch training run; returns at once with its operation_id. Every argument "
        "is optional: {} trains the demo (an MLP on 'noisy_spirals', which overfits). Pass flat "
        "arguments or a full `spec`; runs past the concurrency limit queue. Then follow it "
        "with wait_for_operation.",
        CREATES,
    )

    async def get_operation(operation_id: str) -> CallToolResult:
        with client_errors():
            return _result(await service.get_operation(operation_id))

    add(
        get_operation,
        inspect.Signature([_OPERATION_ID], return_annotation=OperationInfo),
        "One run's status, spec, progress, timing, error or stop reason, and the latest value "
        "of each metric.",
    )

    async def list_operations(**arguments: Any) -> CallToolResult:
        with client_errors():
            return _result(await service.list_operations(parse(ListQuery, arguments)))

    add(
        list_operations,
        signature(ListQuery, OperationList),
        "Runs, newest first, optionally only those in one status.",
    )

    async def get_operation_metrics(operation_id: str, **arguments: Any) -> CallToolResult:
        with client_errors():
            query = parse(MetricsQuery, arguments)
            return _result(await service.get_metrics(operation_id, query))

    add(
        get_operation_metrics,
        signature(MetricsQuery, OperationMetrics, leading=[_OPERATION_ID]),
        "A run's curves: per metric, columnar steps and values, downsampled past max_points "
        "(counts say what was dropped); pass next_cursor back to get only what is new. For a "
        "decision you rarely need it: wait_for_operation and analyze_loss carry the numbers.",
    )

    async def analyze_loss(operation_id: str, **arguments: Any) -> CallToolResult:
        with client_errors():
            request = parse(AnalyzeRequest, arguments)
            analysis = await service.analyze(operation_id, request.params())
        if request.detail == "full":
            return _result(analysis, _analysis_line(analysis), _ANALYSIS_SAID)
        digest = AnalysisDigest.of(analysis)
        return _result(digest, _analysis_line(digest), _ANALYSIS_SAID)

    add(
        analyze_loss,
        signature(AnalyzeRequest, AnalysisDigest, leading=[_OPERATION_ID]),
        "The decision on a run: verdict, recommendation (continue, stop_and_restore_best, "
        "reduce_learning_rate, add_regularization, investigate_divergence, "
        "wait_for_more_epochs), confidence, reasons quoting the numbers, best epoch and value, "
        "flags, criteria fired, and the forecast (probability that continuing to epochs_total "
        "beats the best by more than margin; reasons give the expected gain; a stop comes when "
        "it is worth less than the epochs it costs). detail='full' adds "
        "trends, the generalisation gap, every criterion and the parameters.",
    )

    async def stop_training(operation_id: str, **arguments: Any) -> CallToolResult:
        with client_errors():
            reason = parse(StopRequest, arguments).reason
            return _result(await service.stop_training(operation_id, reason))

    add(
        stop_training,
        signature(StopRequest, Operation, leading=[_OPERATION_ID]),
        "Stop a queued or running run within one batch; its finished epochs are kept and the "
        "reason recorded. Returns the run, normally already 'cancelled'.",
        ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )

    async def wait_for_operation(
        operation_id: str, ctx: Context, **arguments: Any
    ) -> CallToolResult:
        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        with client_errors():
            query = parse(WaitQuery, arguments)
            result = await service.wait_for_operation(operation_id, query, progress=progress)
        return _result(result, _wait_line(result), _WAIT_SAID)

    add(
        wait_for_operation,
        signature(WaitQuery, WaitResult, leading=[_OPERATION_ID, _CTX]),
        "Follow a run cheaply: blocks (up to timeout_s, with progress notifications) until "
        "something bears on a decision (the default until='decision': verdict or "
        "recommendation changed, a flag raised, a stopping criterion fired, the run ended), or "
        "the next epoch, N epochs, or the end; then returns a digest: status, progress, latest "
        "values, indicators and what changed. Call it in a loop until the status is final or "
        "the recommendation is stop_and_restore_best.",
    )

    async def compare_operations(**arguments: Any) -> CallToolResult:
        with client_errors():
            return _result(await service.compare_operations(parse(CompareQuery, arguments)))

    add(
        compare_operations,
        signature(CompareQuery, Comparison),
        "Runs side by side: the spec fields that differ, each run's best value and epoch, final "
        "values and timing, and which run is best.",
    )

    async def plot_metrics(**arguments: Any) -> list[Any]:
        with client_errors():
            request = parse(PlotRequest, arguments)
            png, caption = await service.plot(request.operation_ids, request)
        return [caption, Image(data=png, format="png")]

    add(
        plot_metrics,
        signature(PlotRequest, list[Any]),
        "A PNG of runs' curves (losses and accuracies on separate axes, each best epoch "
        "marked) and a line of text per run.",
        structured_output=False,
        meta=APP_TOOL_META,  # hosts that render MCP Apps show the live dashboard beside it
    )

    def list_entry_points() -> CallToolResult:
        return _result(service.list_entry_points())

    add(
        list_entry_points,
        inspect.Signature([], return_annotation=EntryPointList),
        "The scripts the operator declared, with their parameters: start one with "
        "start_training(entry_point, params).",
        structured_output=False,
    )

    async def get_operation_logs(operation_id: str, **arguments: Any) -> CallToolResult:
        with client_errors():
            query = parse(LogsQuery, arguments)
            return _result(await service.operation_logs(operation_id, query))

    add(
        get_operation_logs,
        signature(LogsQuery, OperationLogs, leading=[_OPERATION_ID]),
        "A script run's stdout or stderr: the last lines, or what is new since a cursor.",
        structured_output=False,
    )


def _add_resources(mcp: MCPServer, service: TrainingService) -> None:
    async def _json(coro: Any) -> str:
        try:
            model = await coro
        except NotFoundError as exc:
            raise ResourceNotFoundError(exc.message) from exc
        text: str = model.model_dump_json()
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
        "training://entry-points",
        name="entry_points",
        mime_type="application/json",
        description="The training scripts the operator declared, with their parameters.",
    )
    async def entry_points() -> str:
        return service.list_entry_points().model_dump_json()

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
