"""The MCP App (extension `io.modelcontextprotocol/ui`): the dashboard inside the conversation.

Hosts that render Apps show `ui://training-mcp/dashboard.html` beside a `show_training` or
`plot_metrics` call: the view draws the curves from the tool result and keeps them live by
calling `dashboard_updates` (visible to the view only, hidden from the model) for what is new;
its stop button calls `stop_training` through the host. The view's default CSP allows no network,
so everything is inline and every byte comes through the host. Hosts without Apps still get the
text (and plot_metrics its PNG).
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.apps import Apps, ResourceCsp
from mcp.types import CallToolResult, TextContent

from mcp_server.core.dashboard import (
    DashboardQuery,
    DashboardSnapshot,
    dashboard_snapshot,
)
from mcp_server.core.service import TrainingService
from mcp_server.dashboard.assets import render_page
from mcp_server.tool_models import READ_ONLY, client_errors, parse, signature

__all__ = ["APP_TOOL_META", "DASHBOARD_URI", "build_apps"]

DASHBOARD_URI = "ui://training-mcp/dashboard.html"
# For tools registered outside this module (plot_metrics): the same link Apps.tool stamps.
APP_TOOL_META: dict[str, Any] = {"ui": {"resourceUri": DASHBOARD_URI}}

ShownResult = Annotated[CallToolResult, DashboardSnapshot]


def _summary(snapshot: DashboardSnapshot) -> str:
    """One compact line per run: what a model (or a host without Apps) reads."""
    lines = []
    for run in snapshot.runs:
        m = run.metrics
        total = f"/{m.epochs_total}" if m.epochs_total else ""
        line = f"{m.operation_id} {run.name!r}: {m.status.value}, epoch {m.epochs_done}{total}"
        ind = m.indicators
        if ind is not None and ind.best_epoch is not None and ind.best_value is not None:
            line += (
                f"; best {ind.monitor} {ind.best_value:.4g} at epoch {ind.best_epoch}; "
                f"{ind.verdict}, {ind.recommendation}"
            )
        lines.append(line)
    if snapshot.differences:
        lines.append("differs in: " + ", ".join(d.path for d in snapshot.differences))
    return "\n".join(lines)


def build_apps(service: TrainingService) -> Apps:
    """The Apps extension with its view and tools; pass it to `MCPServer(extensions=[...])`."""
    apps = Apps()
    apps.add_html_resource(
        DASHBOARD_URI,
        render_page("app", title="training-mcp dashboard"),
        name="dashboard",
        title="Training dashboard",
        description="Live curves of training runs, smoothing, overlays, best epochs, stop.",
        csp=ResourceCsp(),  # the defaults: no network from the view
        prefers_border=True,
    )

    async def show_training(**arguments: Any) -> CallToolResult:
        with client_errors():
            query = parse(DashboardQuery, {**arguments, "max_points": 200})
            snapshot = await dashboard_snapshot(service, query)
        return CallToolResult(
            content=[TextContent(type="text", text=_summary(snapshot))],
            structured_content=snapshot.model_dump(mode="json"),
        )

    show_training.__signature__ = signature(  # type: ignore[attr-defined]
        DashboardQuery, ShownResult, fields=["operation_ids"]
    )
    apps.tool(
        resource_uri=DASHBOARD_URI,
        name="show_training",
        annotations=READ_ONLY,
        description=(
            "Show runs as a live dashboard in hosts that render MCP Apps (curves that grow every "
            "epoch, smoothing, runs overlaid, best epoch marked, a stop button for the person). "
            "Returns one line per run (status, progress, best value and epoch, verdict, "
            "recommendation) and the spec fields that differ. Call it when the person wants to "
            "watch or compare runs."
        ),
    )(show_training)

    async def dashboard_updates(**arguments: Any) -> CallToolResult:
        with client_errors():
            snapshot = await dashboard_snapshot(service, parse(DashboardQuery, arguments))
        points = sum(s.returned_points for r in snapshot.runs for s in r.metrics.series)
        return CallToolResult(
            content=[TextContent(type="text", text=f"{points} points")],
            structured_content=snapshot.model_dump(mode="json"),
        )

    dashboard_updates.__signature__ = signature(  # type: ignore[attr-defined]
        DashboardQuery, ShownResult
    )
    apps.tool(
        resource_uri=DASHBOARD_URI,
        visibility=["app"],
        name="dashboard_updates",
        annotations=READ_ONLY,
        description=(
            "For the dashboard view: the runs' points past each cursor (downsampled), their "
            "status and indicators, and whether any run is still active."
        ),
    )(dashboard_updates)

    return apps
