"""What a training run emits: per-epoch and per-step records, the sink they go to, and the result.

These values are the contract between the training loop (which runs anywhere: in the server's worker
thread or on a GPU host) and whoever stores them. They are plain, immutable and torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "EPOCH_FIELDS",
    "EpochRecord",
    "MetricSink",
    "RunOutcome",
    "RunResult",
    "StepRecord",
]

# The per-epoch metrics every run reports (accuracies only for classification).
EPOCH_FIELDS = (
    "train_loss",
    "val_loss",
    "train_accuracy",
    "val_accuracy",
    "learning_rate",
    "epoch_duration_s",
    "samples_per_s",
    "grad_norm",
)


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """Everything measured in one finished epoch. `epoch` counts from 1."""

    epoch: int
    train_loss: float
    learning_rate: float
    epoch_duration_s: float
    samples_per_s: float
    grad_norm: float
    timestamp: float
    val_loss: float | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Metric name -> value for this epoch (absent values left out, custom metrics included)."""
        values: dict[str, float] = {}
        for name in EPOCH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                values[name] = float(value)
        values.update(self.extra)
        return values

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self.metrics().values())


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Training loss of one batch. `step` is the global batch count from 1; stored as
    `step/train_loss` (`training_mcp.points.step_points`)."""

    step: int
    epoch: int
    train_loss: float
    timestamp: float


class MetricSink(Protocol):
    """Where the loop sends its records. Implementations must be quick and must not raise."""

    def on_epoch(self, record: EpochRecord) -> None: ...

    def on_step(self, record: StepRecord) -> None: ...


RunOutcome = Literal["completed", "early_stopped", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended. `reason` says why it stopped early, failed or was cancelled."""

    outcome: RunOutcome
    epochs_completed: int
    device: str
    reason: str | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    checkpoint_dir: str | None = None
