"""A run's per-epoch history, read from storage, and the incremental analysis kept per operation."""

from __future__ import annotations

from collections import defaultdict

from storage import Database, read_metrics
from trainer.analysis import AnalysisParams, EpochMetrics, LossAnalysis, LossAnalyzer, analyze_loss

__all__ = ["AnalysisCache", "is_step_metric", "load_history"]


def is_step_metric(name: str) -> bool:
    """Per-step series (`step/...`) are indexed by batch; everything else by epoch."""
    return name.startswith("step/")


async def load_history(db: Database, operation_id: str) -> list[EpochMetrics]:
    """Every epoch-level metric of a run, whole, grouped into one row per epoch."""
    read = await read_metrics(db, operation_id)
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    for series in read.series:
        if is_step_metric(series.name):
            continue
        for step, value in zip(series.steps, series.floats(), strict=True):
            rows[step][series.name] = value
    return [EpochMetrics(epoch=epoch, values=rows[epoch]) for epoch in sorted(rows)]


class AnalysisCache:
    """The default-parameter analysis of each operation, updated as epochs arrive.

    Built from storage on first use; local runs then add each epoch in O(window). Pushed metrics
    (which may arrive in any order or in parts) just invalidate it. A version counter makes a build
    that raced with new epochs start again rather than miss them.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._analyzers: dict[str, LossAnalyzer] = {}
        self._last_epoch: dict[str, int] = {}
        self._versions: dict[str, int] = defaultdict(int)

    def add(self, operation_id: str, point: EpochMetrics) -> None:
        self._versions[operation_id] += 1
        analyzer = self._analyzers.get(operation_id)
        if analyzer is None:
            return
        if point.epoch <= self._last_epoch.get(operation_id, 0):
            self.invalidate(operation_id)
            return
        analyzer.add(point)
        self._last_epoch[operation_id] = point.epoch

    def invalidate(self, operation_id: str) -> None:
        self._versions[operation_id] += 1
        self._analyzers.pop(operation_id, None)
        self._last_epoch.pop(operation_id, None)

    async def current(self, operation_id: str) -> LossAnalysis:
        analyzer = self._analyzers.get(operation_id)
        while analyzer is None:
            version = self._versions[operation_id]
            history = await load_history(self._db, operation_id)
            if version != self._versions[operation_id]:
                continue
            analyzer = LossAnalyzer()
            for point in history:
                analyzer.add(point)
            self._analyzers[operation_id] = analyzer
            self._last_epoch[operation_id] = history[-1].epoch if history else 0
        return analyzer.result()

    async def with_params(self, operation_id: str, params: AnalysisParams) -> LossAnalysis:
        if params == AnalysisParams():
            return await self.current(operation_id)
        return analyze_loss(await load_history(self._db, operation_id), params)
