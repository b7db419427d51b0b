"""What the dashboard view draws: several runs' curves, read through the service's ordinary
metric reads (downsampled, incremental by cursor), and the spec fields that differ between them.

The MCP App's tools take `DashboardQuery` and return `DashboardSnapshot`; the browser page reads
the same data from the REST mirror.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.core.errors import InvalidInputError, NotFoundError
from mcp_server.core.models import OperationMetrics, SpecDifference
from mcp_server.core.queries import CompareQuery, ListQuery, MetricsQuery
from mcp_server.core.service import TrainingService
from storage import MIN_SAMPLE_POINTS, OperationStatus

__all__ = ["DEFAULT_VIEW_POINTS", "DashboardQuery", "DashboardSnapshot", "dashboard_snapshot"]

DEFAULT_VIEW_POINTS = 500  # per metric: enough for a smooth curve, small for a 100,000-step run
MAX_RUNS = 10


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_RUNS,
        description="Runs to show (1 to 10 ids); default the newest three",
    )
    cursors: dict[str, str] | None = Field(
        default=None,
        description="operation_id -> next_cursor of the last read: only what is new",
    )
    metrics: list[str] | None = Field(
        default=None, description="Metric names; default losses, accuracies, learning rate"
    )
    max_points: int = Field(
        default=DEFAULT_VIEW_POINTS, ge=MIN_SAMPLE_POINTS, le=2000, description="Per metric"
    )
    include_steps: bool = Field(default=False, description="Add the per-step loss")


class DashboardRun(BaseModel):
    name: str
    reason: str | None = Field(default=None, description="Why it ended as it did")
    metrics: OperationMetrics = Field(
        description="New points since the run's cursor (all, downsampled, without one)"
    )


class DashboardSnapshot(BaseModel):
    runs: list[DashboardRun]
    differences: list[SpecDifference] = Field(
        default_factory=list, description="Spec fields that differ (first read of 2+ runs)"
    )
    active: bool = Field(description="Some run is still queued or running: poll again")


async def _default_ids(service: TrainingService) -> list[str]:
    listed = await service.list_operations(ListQuery(limit=3))
    if not listed.operations:
        raise NotFoundError(
            "operation_ids: no runs yet; start one with start_training", field="operation_ids"
        )
    return [op.operation_id for op in listed.operations]


async def dashboard_snapshot(service: TrainingService, query: DashboardQuery) -> DashboardSnapshot:
    """The runs' metrics, only what is past each run's cursor where one is given; the newest
    three runs when no ids are; the spec differences on a first read of several runs."""
    if query.operation_ids:
        ids = list(dict.fromkeys(query.operation_ids))
    else:
        ids = await _default_ids(service)
    cursors = query.cursors or {}
    unknown = sorted(set(cursors) - set(ids))
    if unknown:
        raise InvalidInputError(
            f"cursors: {unknown[0]} is not one of operation_ids", field="cursors"
        )
    runs = []
    for oid in ids:
        op = await service.get_operation(oid)
        read = await service.get_metrics(
            oid,
            MetricsQuery(
                metrics=query.metrics,
                cursor=cursors.get(oid),
                max_points=query.max_points,
                include_steps=query.include_steps,
            ),
        )
        runs.append(DashboardRun(name=op.name, reason=op.reason, metrics=read))
    differences = []
    if len(ids) > 1 and not cursors:
        differences = (
            await service.compare_operations(CompareQuery(operation_ids=ids))
        ).differences
    active = any(
        r.metrics.status in (OperationStatus.QUEUED, OperationStatus.RUNNING) for r in runs
    )
    return DashboardSnapshot(runs=runs, differences=differences, active=active)
