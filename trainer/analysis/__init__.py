"""Loss analysis: best epoch, trend, overfitting, plateau, divergence and a recommendation.

Pure code (stdlib and pydantic, no torch, no I/O). `analyze_loss` judges a whole metric history;
`LossAnalyzer` gives the same answer incrementally, one epoch at a time, keeping running state
(EMA, best values, Prechelt strip state, flag episodes) and doing only windowed work per epoch.
`analyze_loss` is defined as replaying the history through that same state machine, so the two can
never disagree.

Every per-epoch judgement uses only the epochs up to it, so "fired at epoch t" and "since epoch t"
mean what a callback watching the run live would have seen at t. Prechelt's criteria follow
"Early Stopping - But When?" (1998) exactly: GL in percent, P_k in per mille over strips of k epochs
ending at epochs divisible by k, UP_s over strip ends. Patience follows Keras.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from trainer.analysis.engine import Engine, plan_roles
from trainer.analysis.models import (
    AnalysisParams,
    FlagName,
    ForecastSummary,
    GeneralizationGap,
    LossAnalysis,
    LossFlag,
    Recommendation,
    RunSummary,
    StoppingCriteria,
    StoppingCriterion,
    TrendSummary,
    Verdict,
    output_float,
)
from trainer.analysis.report import Report
from trainer.records import EpochRecord

__all__ = [
    "AnalysisParams",
    "EpochMetrics",
    "FlagName",
    "ForecastSummary",
    "GeneralizationGap",
    "LossAnalysis",
    "LossAnalyzer",
    "LossFlag",
    "Recommendation",
    "RunSummary",
    "StoppingCriteria",
    "StoppingCriterion",
    "TrendSummary",
    "Verdict",
    "analyze_loss",
    "summarize_run",
]


@dataclass(frozen=True, slots=True)
class EpochMetrics:
    """One epoch of a run's history. Any metric may be missing; values may be NaN or infinite."""

    epoch: int
    values: Mapping[str, float]

    @classmethod
    def from_record(cls, record: EpochRecord) -> EpochMetrics:
        """The analysis input for one `EpochRecord` emitted by the training loop."""
        return cls(record.epoch, record.metrics())


def _points(history: Iterable[EpochMetrics]) -> dict[int, dict[str, float]]:
    """Epoch -> values, sorted by epoch; for a repeated epoch the last one wins."""
    by_epoch = {point.epoch: _values(point) for point in history}
    return dict(sorted(by_epoch.items()))


def _values(point: EpochMetrics) -> dict[str, float]:
    return {name: float(value) for name, value in point.values.items()}


class LossAnalyzer:
    """Incremental `analyze_loss`: `add` each epoch as it arrives, `result()` any time.

    `result()` equals `analyze_loss` over the same points. Epochs should arrive in increasing
    order; an older or repeated epoch (the last one wins), or a metric that changes which series
    play which role (say the first validation value), makes it replay the stored history once.
    """

    def __init__(self, params: AnalysisParams | None = None) -> None:
        self._params = params if params is not None else AnalysisParams()
        self._history: dict[int, dict[str, float]] = {}
        self._names: set[str] = set()
        self._engine = Engine(self._params, plan_roles(self._params, self._names))
        self._result: LossAnalysis | None = None

    @property
    def params(self) -> AnalysisParams:
        return self._params

    def add(self, point: EpochMetrics) -> None:
        """Take one epoch of metrics."""
        values = _values(point)
        last = self._engine.last_epoch
        in_order = last is None or point.epoch > last
        self._history[point.epoch] = values
        self._result = None
        if not in_order:
            self._rebuild(sort=True)
            return
        if not values.keys() <= self._names:
            self._names |= values.keys()
            if plan_roles(self._params, self._names) != self._engine.plan:
                self._rebuild(sort=False)
                return
        self._engine.step(point.epoch, values)

    def result(self) -> LossAnalysis:
        """The analysis of every epoch added so far."""
        if self._result is None:
            self._result = Report(self._engine).build()
        return self._result

    def result_with(self, point: EpochMetrics) -> LossAnalysis:
        """The analysis as if `point` were the next epoch, leaving this analyzer as it was: for
        an epoch still arriving in parts (train_loss in one push, val_loss in the next). Costs a
        copy of the per-epoch state (O(window)), not a replay of the history."""
        last = self._engine.last_epoch
        values = _values(point)
        if (last is not None and point.epoch <= last) or not values.keys() <= self._names:
            trial = LossAnalyzer(self._params)
            trial._load([*(EpochMetrics(e, v) for e, v in self._history.items()), point])
            return trial.result()
        engine = copy.deepcopy(self._engine)
        engine.step(point.epoch, values)
        return Report(engine).build()

    def _load(self, history: Iterable[EpochMetrics]) -> None:
        self._history = _points(history)
        self._rebuild(sort=False)

    def _rebuild(self, *, sort: bool) -> None:
        if sort:
            self._history = dict(sorted(self._history.items()))
        self._names = {name for values in self._history.values() for name in values}
        self._engine = Engine(self._params, plan_roles(self._params, self._names))
        self._result = None
        for epoch, values in self._history.items():
            self._engine.step(epoch, values)


def analyze_loss(
    history: Sequence[EpochMetrics], params: AnalysisParams | None = None
) -> LossAnalysis:
    """Judge a run from its whole metric history (in any order; a repeated epoch: last wins).

    Returns the best epoch, trend, generalisation gap, flags with evidence, Prechelt/patience
    stopping criteria, a verdict and a recommendation with reasons. Never truncates the series.
    """
    analyzer = LossAnalyzer(params)
    analyzer._load(history)
    return analyzer.result()


def summarize_run(history: Sequence[EpochMetrics]) -> RunSummary:
    """Best loss (validation if any, else training) and its epoch, final values and timing."""
    points = _points(history)
    best_metric: str | None = None
    best: tuple[int, float] | None = None
    for metric in ("val_loss", "train_loss"):
        for epoch, values in points.items():
            value = values.get(metric)
            if value is not None and math.isfinite(value) and (best is None or value < best[1]):
                best = (epoch, value)
        if best is not None:
            best_metric = metric
            break
    final: dict[str, float | None] = {}
    for values in points.values():
        for name, value in values.items():
            final[name] = output_float(value)
    durations = [
        d
        for values in points.values()
        if (d := values.get("epoch_duration_s")) is not None and math.isfinite(d)
    ]
    epochs = list(points)
    return RunSummary(
        epochs=len(epochs),
        first_epoch=epochs[0] if epochs else None,
        last_epoch=epochs[-1] if epochs else None,
        best_metric=best_metric,
        best_value=output_float(best[1]) if best is not None else None,
        best_epoch=best[0] if best is not None else None,
        final_values=dict(sorted(final.items())),
        mean_epoch_duration_s=output_float(sum(durations) / len(durations)) if durations else None,
        total_duration_s=output_float(sum(durations)) if durations else None,
    )
