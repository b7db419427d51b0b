"""A run's per-epoch history, read from storage, and the incremental analysis kept per operation."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from storage import (
    Database,
    OperationNotFoundError,
    get_operation,
    read_metrics,
    tail_points,
)
from trainer.analysis import AnalysisParams, EpochMetrics, LossAnalysis, LossAnalyzer, analyze_loss
from trainer.analysis.system import INPUT_WINDOW, SystemWindow, system_flags, with_system
from training_mcp.points import SYSTEM_PREFIX, is_epoch_metric

__all__ = ["AnalysisCache", "PointLike", "load_history"]


async def load_history(db: Database, operation_id: str) -> list[EpochMetrics]:
    """Every epoch-level metric of a run, whole, grouped into one row per epoch."""
    read = await read_metrics(db, operation_id)
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    for series in read.series:
        if not is_epoch_metric(series.name):
            continue
        for step, value in zip(series.steps, series.floats(), strict=True):
            rows[step][series.name] = value
    return [EpochMetrics(epoch=epoch, values=rows[epoch]) for epoch in sorted(rows)]


class PointLike(Protocol):
    """A stored point as the system window takes it (a `MetricPoint` or a `MetricPointIn`)."""

    @property
    def name(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def value(self) -> float: ...
    @property
    def epoch(self) -> int | None: ...


@dataclass
class _Tracked:
    """One run's analyzer: every sealed epoch fed in order, and the newest epoch held open while
    its parts may still arrive (a pushed run may send train_loss and val_loss separately)."""

    analyzer: LossAnalyzer
    sealed: int  # the last epoch fed to the analyzer, 0 before any
    open_epoch: int | None = None
    open_values: dict[str, float] = field(default_factory=dict)
    result: LossAnalysis | None = None

    def seal(self) -> None:
        if self.open_epoch is not None:
            self.analyzer.add(EpochMetrics(self.open_epoch, self.open_values))
            self.sealed, self.open_epoch, self.open_values = self.open_epoch, None, {}

    def take(self, epoch: int, values: Mapping[str, float]) -> bool:
        """Merge one epoch's values; False when they belong to an epoch already sealed (the
        caller rebuilds from storage then)."""
        if epoch <= self.sealed or (self.open_epoch is not None and epoch < self.open_epoch):
            return False
        if epoch != self.open_epoch:
            self.seal()
            self.open_epoch = epoch
        self.open_values.update(values)
        self.result = None
        return True

    def current(self) -> LossAnalysis:
        if self.result is None:
            self.result = (
                self.analyzer.result()
                if self.open_epoch is None
                else self.analyzer.result_with(EpochMetrics(self.open_epoch, self.open_values))
            )
        return self.result


class AnalysisCache:
    """The default-parameter analysis of each operation, updated as epochs arrive.

    Built from storage on first use; then every source updates it in O(window) per epoch: a local
    run's whole epochs, and pushed points, merged per epoch while the newest epoch is still
    arriving. Only what cannot be merged in order (a value for an epoch already sealed, a batch
    with duplicates whose stored values may differ from the sent ones) drops it, to be rebuilt
    from storage on the next read. A version counter makes a build that raced with new epochs
    start again rather than miss them.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._runs: dict[str, _Tracked] = {}
        self._versions: dict[str, int] = defaultdict(int)
        self._budgets: dict[str, int | None] = {}  # epochs_total, fixed when a run is created
        self._system: dict[str, SystemWindow] = {}  # the latest system samples, once read

    def add(self, operation_id: str, point: EpochMetrics) -> None:
        """A whole epoch (a local run's)."""
        self.merge(operation_id, {point.epoch: point.values})
        tracked = self._runs.get(operation_id)
        if tracked is not None:
            tracked.seal()

    def merge(self, operation_id: str, epochs: Mapping[int, Mapping[str, float]]) -> None:
        """Epoch-level values just stored, epoch -> metric -> value, in any grouping."""
        self._versions[operation_id] += 1
        tracked = self._runs.get(operation_id)
        if tracked is None:
            return
        for epoch in sorted(epochs):
            if not tracked.take(epoch, epochs[epoch]):
                self.invalidate(operation_id)
                return

    def merge_system(self, operation_id: str, points: Iterable[PointLike]) -> bool:
        """System points just stored (`system/...`), into the window the system flags read;
        True when the flags they raise changed (the analysis did)."""
        window = self._system.get(operation_id)
        if window is None:  # nobody read this run's analysis yet: storage has them
            return False
        before = {f.name for f in system_flags(window.samples())}
        for p in points:
            if math.isfinite(p.value):  # a NaN reading says nothing
                window.add(p.name.removeprefix(SYSTEM_PREFIX), p.step, p.value, p.epoch)
        return before != {f.name for f in system_flags(window.samples())}

    async def _system_window(self, operation_id: str) -> SystemWindow:
        window = self._system.get(operation_id)
        if window is None:
            rows = await tail_points(
                self._db, operation_id, prefix=SYSTEM_PREFIX, last=INPUT_WINDOW
            )
            window = self._system.setdefault(operation_id, SystemWindow())
            for name, step, epoch, value, special, _ in rows:
                if value is not None and special == 0:  # a NaN reading says nothing
                    window.add(name.removeprefix(SYSTEM_PREFIX), step, value, epoch)
        return window

    def invalidate(self, operation_id: str) -> None:
        self._versions[operation_id] += 1
        self._runs.pop(operation_id, None)

    async def current(self, operation_id: str) -> LossAnalysis:
        """The default analysis, with what the run's system metrics say (`input_bound`,
        `near_oom`) among its flags and reasons."""
        analysis = await self._epochs(operation_id)
        return with_system(analysis, (await self._system_window(operation_id)).samples())

    async def _epochs(self, operation_id: str) -> LossAnalysis:
        tracked = self._runs.get(operation_id)
        while tracked is None:
            params = await self.defaults(operation_id)
            version = self._versions[operation_id]
            history = await load_history(self._db, operation_id)
            if version != self._versions[operation_id]:
                continue  # epochs arrived while it read: read again
            # Nothing awaits from here on: an epoch merged now would find no cache and be lost
            # (a restarted server's first read, awaiting the run's budget here, lost one).
            analyzer = LossAnalyzer(params)
            for point in history:
                analyzer.add(point)
            tracked = _Tracked(analyzer, sealed=history[-1].epoch if history else 0)
            self._runs[operation_id] = tracked
        return tracked.current()

    async def defaults(self, operation_id: str) -> AnalysisParams:
        """The default parameters for this run: its own epochs_total is the forecast's horizon."""
        if operation_id not in self._budgets:
            try:
                budget = (await get_operation(self._db, operation_id)).epochs_total
            except OperationNotFoundError:
                return AnalysisParams()
            self._budgets[operation_id] = budget
        return AnalysisParams(epochs_total=self._budgets[operation_id])

    async def with_params(self, operation_id: str, params: AnalysisParams) -> LossAnalysis:
        defaults = await self.defaults(operation_id)
        if params.epochs_total is None:
            params = params.model_copy(update={"epochs_total": defaults.epochs_total})
        if params == defaults:
            return await self.current(operation_id)
        analysis = analyze_loss(await load_history(self._db, operation_id), params)
        return with_system(analysis, (await self._system_window(operation_id)).samples())
