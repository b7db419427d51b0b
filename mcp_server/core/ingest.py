"""The one ingestion path: local runs, bridge runs and pushed metrics all store through here,
which then updates the analysis and notifies every listener."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mcp_server.core.history import AnalysisCache, PointLike
from mcp_server.core.notify import Change, Notifier
from storage import (
    AppendResult,
    Database,
    IllegalTransitionError,
    MetricPointIn,
    Operation,
    OperationStatus,
    append_points,
    get_operation,
    set_status,
    validate_points,
)
from trainer.analysis import EpochMetrics
from trainer.records import EpochRecord, StepRecord
from training_mcp.points import (
    MetricPoint,
    epoch_points,
    is_epoch_metric,
    is_system_metric,
    step_points,
)

__all__ = ["Ingestor"]


class Ingestor:
    def __init__(self, db: Database, notifier: Notifier, analyses: AnalysisCache) -> None:
        self.db = db
        self.notifier = notifier
        self.analyses = analyses

    async def record_epoch(
        self, operation_id: str, record: EpochRecord, steps: Sequence[StepRecord] = ()
    ) -> None:
        """A local run's epoch (with the per-step losses logged during it)."""
        points = [*step_points(steps), *epoch_points(record)]
        await append_points(self.db, operation_id, points, progress_epoch=record.epoch)
        self.analyses.add(operation_id, EpochMetrics.from_record(record))
        await self.notifier.publish(Change(operation_id, "epoch", epoch=record.epoch))

    async def record_steps(self, operation_id: str, steps: Sequence[StepRecord]) -> None:
        await append_points(self.db, operation_id, step_points(steps), allow_finished=True)

    async def record_system(self, operation_id: str, points: Sequence[MetricPoint]) -> None:
        """A system sample of a run this server samples itself (`mcp_server.core.system`)."""
        result = await append_points(self.db, operation_id, points)
        if result.stored:
            await self._system_stored(operation_id, points)

    async def _system_stored(self, operation_id: str, points: Sequence[PointLike]) -> None:
        # Every few seconds per run: subscribers hear of it only when a system flag changed
        # (the analysis did); waiters just wake.
        if self.analyses.merge_system(operation_id, points):
            await self.notifier.publish(Change(operation_id, "metrics"))
        else:
            self.notifier.wake(operation_id)

    async def record_points(
        self, operation_id: str, raw: Sequence[MetricPointIn | Mapping[str, Any]]
    ) -> AppendResult:
        """Points pushed over HTTP (host bridge or an external run), validated as a whole."""
        batch = validate_points(raw)
        by_epoch: dict[int, dict[str, float]] = defaultdict(dict)  # one pass over the batch
        system: list[MetricPointIn] = []
        for p in batch:
            if is_epoch_metric(p.name):
                by_epoch[p.step][p.name] = p.value
            elif is_system_metric(p.name):
                system.append(p)
        latest = max(by_epoch) if by_epoch else None
        result = await append_points(self.db, operation_id, batch, progress_epoch=latest)
        if result.stored and system:
            await self._system_stored(operation_id, system)
        if result.stored and latest is not None:
            if result.stored < result.received:
                # Some were already stored, perhaps with other values: storage is the truth.
                self.analyses.invalidate(operation_id)
            else:
                self.analyses.merge(operation_id, by_epoch)
            await self.notifier.publish(Change(operation_id, "epoch", epoch=latest))
        elif result.stored and len(system) < len(batch):
            await self.notifier.publish(Change(operation_id, "metrics"))
        return result

    async def record_status(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
        device: str | None = None,
    ) -> Operation:
        op = await set_status(
            self.db, operation_id, status, error=error, reason=reason, device=device
        )
        await self.notifier.publish(Change(operation_id, "status", status=op.status.value))
        return op

    async def record_end(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        reason: str | None = None,
        error: str | None = None,
    ) -> Operation:
        """Record how a run ended, unless it ended meanwhile: that end stands, and is returned."""
        try:
            return await self.record_status(operation_id, status, reason=reason, error=error)
        except IllegalTransitionError:
            return await get_operation(self.db, operation_id)

    async def announce(self, operation: Operation) -> None:
        await self.notifier.publish(Change(operation.operation_id, "created"))
