"""The metric point: what every source sends and the server stores, and the rules it obeys.

This is the one home of the wire point (`MetricPoint`), the step-vs-epoch rule, the name rule,
the batch limit and the record -> points conversion. The server's storage, ingestion and REST
models, the host bridge and the client all use it. Standard library only.

A metric is an epoch metric (`train_loss`, `val_loss`, ...), whose `step` is the epoch number; a
per-step metric, named `step/...`, whose `step` is the global batch number and whose `epoch` says
which epoch the batch belonged to; or a system metric, named `system/...` (CPU, memory, GPU:
`training_mcp.system`), whose `step` is the time it was sampled in milliseconds since the Unix
epoch and whose `epoch` is the last epoch the run had finished then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "MAX_BATCH_POINTS",
    "MAX_STEP",
    "METRIC_NAME_PATTERN",
    "METRIC_NAME_RULE",
    "PUSH_TOKEN_HEADER",
    "STEP_LOSS_METRIC",
    "STEP_PREFIX",
    "SYSTEM_PREFIX",
    "EpochLike",
    "MetricPoint",
    "StepLike",
    "check_metric_name",
    "epoch_points",
    "is_epoch_metric",
    "is_step_metric",
    "is_system_metric",
    "points_at",
    "step_points",
    "system_points",
]

# The header that carries a run's push credential on every push, status report and heartbeat: the
# server answers one when it registers an external run and sends a bridge one per session.
PUSH_TOKEN_HEADER = "X-Training-Push-Token"
# At most this many points per request to POST /api/v1/operations/{id}/metrics.
MAX_BATCH_POINTS = 10_000
# Steps are stored as 64-bit integers; this bound leaves room.
MAX_STEP = 2**62
# Metric names: a letter, then letters, digits and `_ . / -`, at most 128 characters in all.
METRIC_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_./-]{0,127}$"
METRIC_NAME_RULE = (
    "must start with a letter and hold only letters, digits and _ . / - (at most 128 characters)"
)
_METRIC_NAME = re.compile(METRIC_NAME_PATTERN)
# Per-step series carry this prefix and are indexed by global batch; all others by epoch.
STEP_PREFIX = "step/"
# A batch's training loss, the per-step series a training loop reports.
STEP_LOSS_METRIC = "step/train_loss"
# System series (CPU, memory, GPU of the run's processes) carry this prefix and are indexed by time.
SYSTEM_PREFIX = "system/"


def is_step_metric(name: str) -> bool:
    """Per-step series (`step/...`) are indexed by batch."""
    return name.startswith(STEP_PREFIX)


def is_system_metric(name: str) -> bool:
    """System series (`system/...`) are indexed by time (milliseconds since the Unix epoch)."""
    return name.startswith(SYSTEM_PREFIX)


def is_epoch_metric(name: str) -> bool:
    """Everything that is neither per-step nor a system series is indexed by epoch."""
    return not (name.startswith(STEP_PREFIX) or name.startswith(SYSTEM_PREFIX))


def check_metric_name(name: object) -> str:
    """`name` if it is a valid metric name, else `ValueError` saying the rule."""
    # fullmatch: `$` alone would let a trailing newline through (the server's regex does not).
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"metric name {name!r}: {METRIC_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One value of one metric at one step (the epoch, for epoch-level metrics)."""

    name: str
    step: int
    value: float
    epoch: int | None = None
    wall_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The point as the REST mirror takes it (absent fields left out)."""
        body: dict[str, Any] = {"name": self.name, "step": self.step, "value": self.value}
        if self.epoch is not None:
            body["epoch"] = self.epoch
        if self.wall_time is not None:
            body["wall_time"] = self.wall_time
        return body


def points_at(
    step: int,
    values: Mapping[str, Any],
    *,
    epoch: int | None = None,
    wall_time: float | None = None,
) -> list[MetricPoint]:
    """Values logged at `step`, checked: a valid step, valid names, anything `float()` takes (a
    0-d tensor, a numpy scalar; NaN and infinities too). An epoch metric's `epoch` defaults to
    `step`; a per-step metric's stays what was given."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(f"step: must be an integer between 0 and 2**62, got {step!r}")
    points = []
    for name, raw in values.items():
        check_metric_name(name)
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: must be a number, got {raw!r}") from exc
        at_epoch = epoch if epoch is not None or not is_epoch_metric(name) else step
        points.append(MetricPoint(name, step, value, at_epoch, wall_time))
    return points


class EpochLike(Protocol):
    """What a training loop's epoch record offers (e.g. `trainer.records.EpochRecord`)."""

    @property
    def epoch(self) -> int: ...

    @property
    def timestamp(self) -> float: ...

    def metrics(self) -> Mapping[str, float]: ...


class StepLike(Protocol):
    """What a training loop's step record offers (e.g. `trainer.records.StepRecord`)."""

    @property
    def step(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    @property
    def train_loss(self) -> float: ...

    @property
    def timestamp(self) -> float: ...


def epoch_points(record: EpochLike) -> list[MetricPoint]:
    """An epoch's metrics as points: step = epoch, wall time = when the epoch ended."""
    return [
        MetricPoint(name, record.epoch, float(value), record.epoch, record.timestamp)
        for name, value in record.metrics().items()
    ]


def step_points(records: Iterable[StepLike]) -> list[MetricPoint]:
    """Batches' training losses as `step/train_loss` points at their global step."""
    return [
        MetricPoint(STEP_LOSS_METRIC, r.step, float(r.train_loss), r.epoch, r.timestamp)
        for r in records
    ]


def system_points(
    values: Mapping[str, float], *, at: float, epoch: int | None = None
) -> list[MetricPoint]:
    """One system sample as points: `values` maps a name under `system/` (`cpu_percent`) to its
    value; the step is `at` (a Unix time) in milliseconds, `epoch` the run's last finished one."""
    step = int(at * 1000)
    return [
        MetricPoint(SYSTEM_PREFIX + name, step, float(value), epoch, at)
        for name, value in values.items()
    ]
