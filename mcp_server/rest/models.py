"""The REST mirror's own request and response models: only what the MCP tools have no twin for.

Everything else the REST JSON carries is a shared model from `mcp_server.core.models`, `storage` or
`trainer.analysis`. The request models the tools share
(query strings too) are `mcp_server.core.queries`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from storage import MetricPointIn, NonFinite, OperationStatus
from training_mcp.points import MAX_BATCH_POINTS, METRIC_NAME_PATTERN

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_POINTS",
    "EpochEvent",
    "Health",
    "IngestResult",
    "MetricsBatch",
    "StatusReport",
]

MAX_POINTS = MAX_BATCH_POINTS
MAX_BODY_BYTES = 1024 * 1024


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool = Field(description="The database answered a query")
    runs_active: int = Field(description="Local runs training now")


class MetricsBatch(BaseModel):
    """Points to store. Values may be the JSON tokens NaN, Infinity and -Infinity (stored
    faithfully, read back as null with a `non_finite` note). Idempotent by (name, step)."""

    model_config = ConfigDict(extra="forbid")

    points: list[MetricPointIn] = Field(
        max_length=MAX_POINTS,
        description=f"At most {MAX_POINTS} points and {MAX_BODY_BYTES} bytes per request; "
        f"names match {METRIC_NAME_PATTERN}",
    )


class IngestResult(BaseModel):
    received: int = Field(description="Points in the request")
    stored: int = Field(description="Points newly stored")
    duplicates: int = Field(description="Points whose (name, step) was already stored: skipped")
    stop_requested: str | None = Field(
        None,
        description="Present when stop_training asked the run to stop: end at the next step",
    )


class StatusReport(BaseModel):
    """An external run reports how it ended."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["completed", "failed"]
    error: str | None = Field(None, max_length=10_000, description="Why it failed")
    reason: str | None = Field(None, max_length=2_000, description="Why it ended as it did")


class EpochEvent(BaseModel):
    """The data of an `epoch` event: every epoch-level metric stored for one epoch (step)."""

    operation_id: str
    epoch: int
    status: OperationStatus
    epochs_done: int
    epochs_total: int | None
    values: dict[str, float | None] = Field(description="Metric -> value; null if not finite")
    non_finite: dict[str, NonFinite] = Field(
        default_factory=dict, description="Metric -> nan, inf or -inf where the value is null"
    )
