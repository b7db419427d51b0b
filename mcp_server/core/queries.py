"""One model per request: each range and description is said here once.

The MCP tools' signatures are built from these models (`mcp_server.server`), the REST mirror parses
its query strings and bodies into the same ones (`mcp_server.rest.routes`), and the service takes
them. `trainer.analysis.AnalysisParams` is the analysis' own request model, used the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_server.core.export import ExportFormat
from storage import MAX_PAGE_SIZE, MAX_RUN_CURSOR, MIN_SAMPLE_POINTS, OperationStatus
from trainer.analysis import AnalysisParams

__all__ = [
    "MAX_LIST",
    "MAX_SERIES_POINTS",
    "MAX_WAIT_S",
    "AnalyzeRequest",
    "CompareQuery",
    "ExportQuery",
    "ListQuery",
    "MetricsQuery",
    "PlotQuery",
    "PlotRequest",
    "StopRequest",
    "WaitQuery",
]

MAX_LIST = 100  # a run lists in under 30 KB at its bounds: a page stays under 3 MB
MAX_SERIES_POINTS = 10_000
MAX_WAIT_S = 55.0  # under the 60 s request timeout most MCP clients use

_QUERY = ConfigDict(extra="forbid", frozen=True)


class ListQuery(BaseModel):
    model_config = _QUERY

    status: OperationStatus | None = Field(default=None, description="Only runs in this status")
    limit: int = Field(default=20, ge=1, le=MAX_LIST, description="At most this many, newest first")
    cursor: str | None = Field(
        default=None, max_length=MAX_RUN_CURSOR, description="next_cursor of a previous answer"
    )


class MetricsQuery(BaseModel):
    model_config = _QUERY

    metrics: list[str] | None = Field(
        default=None,
        description="Metric names; default train/val loss and accuracy and learning_rate; "
        "['all'] for every epoch metric; 'system/' for CPU, memory, GPU",
    )
    cursor: str | None = Field(
        default=None,
        max_length=64,
        description="next_cursor of a previous answer: only newer points",
    )
    last_epochs: int | None = Field(
        default=None, ge=1, le=100_000, description="Only the last N epochs"
    )
    max_points: int = Field(
        default=100,
        ge=MIN_SAMPLE_POINTS,
        le=MAX_SERIES_POINTS,
        description="Per metric; longer series are downsampled keeping each bucket's min, max "
        "and last point",
    )
    include_steps: bool = Field(default=False, description="Add the per-step training loss")
    page_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PAGE_SIZE,
        description="Exact pages instead of downsampling: at most this many points per metric, "
        "in step order (max_points unused); call again with next_cursor while has_more",
    )


class ExportQuery(BaseModel):
    model_config = _QUERY

    metrics: list[str] | None = Field(
        default=None,
        description="Metric names; default every metric, per-step ones included",
    )
    format: ExportFormat = Field(
        default="jsonl",
        description="jsonl (NaN/Infinity/-Infinity tokens), csv (nan/inf/-inf), parquet, or "
        "arrow (an Arrow IPC stream, the fastest; parquet and arrow only where the server has "
        "pyarrow, the export extra)",
    )


class WaitQuery(BaseModel):
    model_config = _QUERY

    until: Literal["decision", "next_epoch", "epochs", "end"] = Field(
        default="decision",
        description="decision: when the verdict or recommendation changes, a flag is raised, a "
        "stopping criterion fires, or the run ends; or after the next epoch, after `epochs` more, "
        "or at the end",
    )
    epochs: int = Field(default=1, ge=1, le=100_000, description="With until='epochs'")
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=MAX_WAIT_S,
        description=f"Give up after this many seconds (<= {MAX_WAIT_S:g})",
    )
    include_history: bool = Field(
        default=False, description="Add every metric point new since the call began"
    )


class AnalyzeRequest(AnalysisParams):
    """analyze_loss's arguments: how to judge (AnalysisParams) and how much to say."""

    detail: Literal["summary", "full"] = Field(
        default="summary",
        description="summary: the decision and the numbers behind it; full: also the trends, "
        "generalisation gap, every stopping criterion and the parameters",
    )

    def params(self) -> AnalysisParams:
        return AnalysisParams.model_validate(self.model_dump(exclude={"detail"}))


def _distinct(ids: list[str]) -> list[str]:
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"each id at most once; repeated: {', '.join(repeated)}")
    return ids


class CompareQuery(BaseModel):
    model_config = _QUERY

    operation_ids: list[str] = Field(
        min_length=2, max_length=10, description="2 to 10 distinct ids"
    )

    _distinct_ids = field_validator("operation_ids")(_distinct)


class PlotQuery(BaseModel):
    model_config = _QUERY

    metrics: list[str] = Field(
        default_factory=lambda: ["train_loss", "val_loss"],
        min_length=1,
        max_length=20,
        description="Metrics to draw",
    )


class PlotRequest(PlotQuery):
    """The plot of several runs (the REST route plots the run in its path)."""

    operation_ids: list[str] = Field(
        min_length=1, max_length=10, description="1 to 10 distinct ids"
    )

    _distinct_ids = field_validator("operation_ids")(_distinct)


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Why; recorded on the run")
