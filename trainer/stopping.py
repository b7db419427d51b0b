"""Early stopping as a pure decision: feed each epoch's metrics, get back stop or go, with a reason.

Semantics follow the anchors named in `EarlyStoppingSpec` (Keras patience/baseline/min_delta and
start_from_epoch, Lightning check_finite and divergence_threshold, Prechelt GL/PQ/UP from "Early
Stopping - But When?", 1998). Epochs count from 1. The loop applies the decision; nothing here
touches torch, weights or files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from trainer.criteria import Prechelt
from trainer.spec import EarlyStoppingSpec, MonitorName, monitor_mode

__all__ = ["Criterion", "EarlyStopper", "StopDecision"]

Criterion = Literal["check_finite", "divergence_threshold", "patience", "gl", "pq", "up"]


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The verdict after one epoch. `improved`: this epoch became the best so far."""

    stop: bool
    improved: bool
    criterion: Criterion | None = None
    reason: str | None = None


class EarlyStopper:
    """Tracks the best epoch of one monitored metric and decides when to stop.

    With `EarlyStoppingSpec(patience=None)` and no other criterion it only tracks the best epoch and
    checks finiteness, which is what the loop uses when early stopping is off.
    """

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.monitor: MonitorName = spec.monitor
        self.mode = monitor_mode(spec.monitor, spec.mode)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0  # Keras: epochs since the count was last reset
        # GL/PQ/UP, shared with the analysis; Prechelt's criteria need a minimised monitor (the
        # spec refuses them otherwise), but the state follows the mode either way.
        self._prechelt = Prechelt(spec.pq_strip_k, 1 if self.mode == "min" else -1)

    def update(self, epoch: int, metrics: Mapping[str, float]) -> StopDecision:
        """Judge epoch `epoch` from its metrics (must hold the monitor, and train_loss for PQ)."""
        s = self.spec
        current = metrics[self.monitor]
        if s.check_finite and not math.isfinite(current):
            return self._stop("check_finite", f"{self.monitor} is {current} at epoch {epoch}")
        if epoch <= s.start_from_epoch:
            return StopDecision(stop=False, improved=False)
        if s.divergence_threshold is not None and self._better(s.divergence_threshold, current):
            worse = "above" if self.mode == "min" else "below"
            return self._stop(
                "divergence_threshold",
                f"{self.monitor} {current:.6g} is {worse} divergence_threshold "
                f"{s.divergence_threshold:g} at epoch {epoch}",
            )

        # Keras: count every watched epoch; an improvement resets the count only if it also beats
        # the baseline (when there is one), and an improving epoch never stops the run.
        self.wait += 1
        improved = self.best_value is None or self._better(current, self.best_value, s.min_delta)
        if improved:
            self.best_value, self.best_epoch = current, epoch
            if s.baseline is None or self._better(current, s.baseline, s.min_delta):
                self.wait = 0
        elif s.patience is not None and self.wait >= s.patience and epoch > 1:
            return self._stop("patience", self._patience_reason(epoch), improved)

        if "train_loss" in metrics:
            self._prechelt.train(epoch, metrics["train_loss"])
        reading = self._prechelt.observe(epoch, current)
        if reading is None:  # not finite (check_finite is off): nothing to judge
            return StopDecision(stop=False, improved=improved)
        if s.gl_alpha is not None and reading.gl > s.gl_alpha:
            return self._stop(
                "gl",
                f"generalization loss GL = {reading.gl:.3g}% > gl_alpha {s.gl_alpha:g} at epoch "
                f"{epoch} ({self.monitor} {current:.6g}, lowest {self._prechelt.opt:.6g})",
                improved,
            )
        k = s.pq_strip_k
        if s.pq_alpha is not None and reading.pq is not None and reading.pq > s.pq_alpha:
            return self._stop(
                "pq",
                f"progress quotient GL/P_{k} = {reading.pq:.3g} > pq_alpha {s.pq_alpha:g} at "
                f"epoch {epoch} (GL {reading.gl:.3g}%, P_{k} {reading.progress:.3g} per mille)",
                improved,
            )
        ups, previous = reading.ups, reading.previous
        if s.up_strips is not None and ups is not None and ups >= s.up_strips:
            assert previous is not None  # a count above 0 compared against a strip end
            return self._stop(
                "up",
                f"{self.monitor} rose at the end of {ups} successive strips of {k} epochs "
                f"(UP_{s.up_strips}), last from {previous[1]:.6g} at epoch {previous[0]} to "
                f"{current:.6g} at epoch {epoch}",
                improved,
            )
        return StopDecision(stop=False, improved=improved)

    def _better(self, value: float, reference: float, min_delta: float = 0.0) -> bool:
        if self.mode == "min":
            return value < reference - min_delta
        return value > reference + min_delta

    def _patience_reason(self, epoch: int) -> str:
        s = self.spec
        reason = (
            f"{self.monitor} did not improve by more than {s.min_delta:g} for {self.wait} epochs "
            f"(patience {s.patience}) at epoch {epoch}; best {self.best_value:.6g} at epoch "
            f"{self.best_epoch}"
        )
        if s.baseline is not None:
            reason += f", baseline {s.baseline:g}"
        return reason

    def _stop(self, criterion: Criterion, reason: str, improved: bool = False) -> StopDecision:
        return StopDecision(stop=True, improved=improved, criterion=criterion, reason=reason)
