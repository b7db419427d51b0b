"""What storage takes and returns; the same models are MCP structured output and REST JSON."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.bounds import MAX_NAME, MAX_TEXT, clip, readable_spec, readable_tags
from training_mcp.points import MAX_STEP, METRIC_NAME_PATTERN

__all__ = [
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "Backend",
    "Lineage",
    "MetricPointIn",
    "MetricsRead",
    "NonFinite",
    "Operation",
    "OperationStatus",
    "SeriesData",
    "SeriesLatest",
    "special_of",
]


class OperationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Backend(StrEnum):
    LOCAL = "local"
    BRIDGE = "bridge"
    EXTERNAL = "external"
    RAY = "ray"
    SCRIPT = "script"  # an operator-declared entry point, run as a process by the server


TERMINAL_STATUSES = frozenset(
    {
        OperationStatus.COMPLETED,
        OperationStatus.FAILED,
        OperationStatus.CANCELLED,
        OperationStatus.INTERRUPTED,
    }
)

# A finished run never goes back. Re-reporting the current status is accepted as a no-op.
TRANSITIONS: dict[OperationStatus, tuple[OperationStatus, ...]] = {
    OperationStatus.QUEUED: (
        OperationStatus.RUNNING,
        OperationStatus.CANCELLED,
        OperationStatus.FAILED,
        OperationStatus.INTERRUPTED,
    ),
    OperationStatus.RUNNING: (
        OperationStatus.COMPLETED,
        OperationStatus.FAILED,
        OperationStatus.CANCELLED,
        OperationStatus.INTERRUPTED,
    ),
    OperationStatus.COMPLETED: (),
    OperationStatus.FAILED: (),
    OperationStatus.CANCELLED: (),
    OperationStatus.INTERRUPTED: (),
}

NonFinite = Literal["nan", "inf", "-inf"]
_SPECIAL_CODES: dict[int, NonFinite] = {1: "nan", 2: "inf", 3: "-inf"}


def special_of(value: float) -> int:
    """Storage code of a value: 0 finite, 1 NaN, 2 +inf, 3 -inf."""
    if math.isfinite(value):
        return 0
    if math.isnan(value):
        return 1
    return 2 if value > 0 else 3


_NON_FINITE_FLOATS: dict[NonFinite, float] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _iso_or_none(ts: float | None) -> datetime | None:
    return None if ts is None else _iso(ts)


class Lineage(BaseModel):
    """Where a forked run came from: its parent, the epoch it started after, what it changed."""

    model_config = ConfigDict(frozen=True)

    parent_id: str
    from_epoch: int = Field(description="The parent's epoch whose checkpoint the run started from")
    changes: dict[str, Any] = Field(description="The hyperparameters changed from the parent's")


class Operation(BaseModel):
    """A training run, wherever it trains."""

    model_config = ConfigDict(frozen=True)

    operation_id: str
    name: str
    status: OperationStatus
    backend: Backend
    spec: dict[str, Any]
    device: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    epochs_done: int = 0
    epochs_total: int | None = None
    error: str | None = Field(default=None, description="Why the run failed, when it did.")
    reason: str | None = Field(
        default=None, description="Why it ended as it did (early stop, cancel, interruption)."
    )
    bridge_url: str | None = None
    lineage: Lineage | None = Field(
        default=None,
        description="Set on a forked run: its epochs up to from_epoch are the parent's, copied",
    )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_row(cls, row: Any) -> Operation:
        # Rows written before the bounds existed may hold anything: show them within the bounds.
        return cls(
            operation_id=row.id,
            name=clip(row.name, MAX_NAME) or "",
            status=OperationStatus(row.status),
            backend=Backend(row.backend),
            spec=readable_spec(row.spec),
            device=row.device,
            tags=readable_tags(row.tags),
            created_at=_iso(row.created_at),
            started_at=_iso_or_none(row.started_at),
            finished_at=_iso_or_none(row.finished_at),
            epochs_done=row.epochs_done,
            epochs_total=row.epochs_total,
            error=clip(row.error, MAX_TEXT),
            reason=clip(row.reason, MAX_TEXT),
            bridge_url=row.bridge_url,
            lineage=Lineage.model_validate(row.lineage) if row.lineage else None,
        )


class MetricPointIn(BaseModel):
    """One metric value to store, validated: `training_mcp.points.MetricPoint` as the server takes
    it (the REST body's points; storage also takes `MetricPoint`s). `step` is the epoch for
    epoch-level metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=True)

    name: str = Field(
        description="Metric name: a letter, then letters, digits and _ . / - (<= 128 in all)",
        # Checked by pydantic-core's own regex, in Rust: a Python validator per point was a third
        # of a 1,000-point batch's cost. `storage.validate_points` words its failure plainly.
        pattern=METRIC_NAME_PATTERN,
        json_schema_extra={"maxLength": 128},
    )
    step: int = Field(
        ge=0,
        le=MAX_STEP,
        description="Epoch for epoch metrics, global batch for step/..., ms time for system/...",
    )
    value: float = Field(description="May be NaN or +/-inf: stored faithfully and flagged.")
    epoch: int | None = Field(default=None, ge=0, le=2**31 - 1)
    wall_time: float | None = Field(
        default=None, ge=0, le=1e11, allow_inf_nan=False, description="Unix seconds; now if absent"
    )


class SeriesData(BaseModel):
    """One metric's points, columnar. `values[i]` is None where the value is not finite; then
    `non_finite` maps str(step) to "nan", "inf" or "-inf"."""

    name: str
    total_points: int = Field(description="Points stored for this metric in all")
    matching_points: int = Field(description="Points inside the requested range (cursor / last N)")
    returned_points: int
    downsampled: bool
    steps: list[int]
    values: list[float | None]
    non_finite: dict[str, NonFinite] = Field(default_factory=dict)

    def floats(self) -> list[float]:
        """The values as stored, NaN and infinities restored where `values` holds None."""
        return [
            v if v is not None else _NON_FINITE_FLOATS[self.non_finite[str(step)]]
            for step, v in zip(self.steps, self.values, strict=True)
        ]

    @classmethod
    def build(
        cls,
        name: str,
        total: int,
        matching: int,
        rows: list[tuple[int, float | None, int]],
        downsampled: bool,
    ) -> SeriesData:
        # Columns by transposing in C, and no validation of what storage itself read: on a
        # 20,000-point page the per-row list building and checking were most of the read.
        steps, values, specials = (
            (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
        )
        non_finite: dict[str, NonFinite] = {}
        if any(specials):
            non_finite = {
                str(s): _SPECIAL_CODES[c] for s, c in zip(steps, specials, strict=True) if c
            }
            values = [None if c else v for v, c in zip(values, specials, strict=True)]
        return cls.model_construct(
            name=name,
            total_points=total,
            matching_points=matching,
            returned_points=len(rows),
            downsampled=downsampled,
            steps=steps,
            values=values,
            non_finite=non_finite,
        )


class MetricsRead(BaseModel):
    """The result of a metrics read: every series asked for, and those that do not exist."""

    operation_id: str
    series: list[SeriesData]
    missing: list[str] = Field(default_factory=list, description="Requested names never stored")


class SeriesLatest(BaseModel):
    """The latest point of one metric, read without scanning its history."""

    name: str
    count: int
    step: int | None
    value: float | None
    non_finite: NonFinite | None = None

    @classmethod
    def from_row(cls, row: Any) -> SeriesLatest:
        special = row.last_special or 0
        return cls(
            name=row.name,
            count=row.n_points,
            step=row.last_step,
            value=row.last_value if special == 0 else None,
            non_finite=_SPECIAL_CODES.get(special),
        )
