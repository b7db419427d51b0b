"""Local runs: each trains in a worker thread of this process, at most N at a time, in order.

The training thread hands its records to the event loop without waiting (`call_soon_threadsafe`
into a memory stream, an epoch's worth at a time), so storage never slows training down; a
consumer task on the loop stores them through the one ingestion path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcp_server.core.ingest import Ingestor
from mcp_server.core.system import RunSampling
from storage import IllegalTransitionError, OperationStatus
from trainer.checkpoint_budget import CheckpointBudget, prune_run, prune_total
from trainer.preflight import TrainerOptions
from trainer.records import EpochRecord, RunResult, StepRecord
from trainer.retention import protected_names
from trainer.spec import TrainingSpec

__all__ = ["SHUTDOWN_REASON", "LocalRunner"]

log = logging.getLogger(__name__)

Handed = tuple[list[StepRecord], EpochRecord | None]  # steps, and the epoch they end (if any)
SHUTDOWN_REASON = "the server shut down during the run; its stored epochs are kept"
_STEP_FLUSH = 512  # store per-step losses at least this often, even inside a long epoch


class _ThreadSink:
    """The MetricSink the training thread writes to: a non-blocking hand-off to the loop, once an
    epoch (its record with the step records logged during it) or every `_STEP_FLUSH` steps inside
    a long one. Each hand-off wakes the event loop, which then takes the GIL from training:
    woken every step, a demo run logging every step took 1.28x the time of one whose records went
    into a queue (1.06x logging every 10th)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: MemoryObjectSendStream[Handed]):
        self._loop = loop
        self._send = send
        self._steps: list[StepRecord] = []

    def on_epoch(self, record: EpochRecord) -> None:
        self._hand_over(record)

    def on_step(self, record: StepRecord) -> None:
        self._steps.append(record)
        if len(self._steps) >= _STEP_FLUSH:
            self._hand_over(None)

    def _hand_over(self, epoch: EpochRecord | None) -> None:
        steps, self._steps = self._steps, []
        self._loop.call_soon_threadsafe(self._send.send_nowait, (steps, epoch))

    def drain(self) -> None:
        """On the loop, once training has returned: the steps of an epoch it left part way (a
        cancel, a failure). What it handed over before is ahead of these in the stream: its
        callbacks were queued before the one that ends the thread's wait."""
        if self._steps:
            steps, self._steps = self._steps, []
            self._send.send_nowait((steps, None))


@dataclass
class _Run:
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    started: bool = False
    start_from: Path | None = None


class LocalRunner:
    def __init__(
        self,
        ingestor: Ingestor,
        options: TrainerOptions,
        task_group: TaskGroup,
        *,
        artifacts_root: Path | None = None,
        max_concurrent: int = 2,
        checkpoints: CheckpointBudget | None = None,
        system: RunSampling | None = None,
        slots: anyio.CapacityLimiter | None = None,
        writing_elsewhere: Callable[[], Collection[str]] = tuple,
    ) -> None:
        """`slots`: the server's concurrency limit when other runs share it (Ray runs do);
        `writing_elsewhere()`: other runs writing checkpoints under `artifacts_root` now
        (script runs), which pruning must leave as it leaves this runner's."""
        self._writing_elsewhere = writing_elsewhere
        self._ingestor = ingestor
        self._system = system
        self._options = options
        self._artifacts_root = artifacts_root
        self._checkpoints = checkpoints or CheckpointBudget()
        self._tg = task_group
        # FIFO: queued runs start in order
        self._limiter = slots or anyio.CapacityLimiter(max_concurrent)
        self._threads = anyio.CapacityLimiter(max_concurrent)
        self._runs: dict[str, _Run] = {}

    @property
    def active(self) -> int:
        return sum(1 for r in self._runs.values() if r.started)

    def is_local(self, operation_id: str) -> bool:
        return operation_id in self._runs

    def start(self, operation_id: str, spec: TrainingSpec, start_from: Path | None = None) -> None:
        """Queue a run; `start_from` is a checkpoint file to resume or fork from."""
        self._runs[operation_id] = _Run(start_from=start_from)
        self._tg.start_soon(self._run, operation_id, spec, name=f"run {operation_id}")

    def cancel(self, operation_id: str, reason: str) -> bool:
        """Ask a run to stop (within one batch). False when it is not running here."""
        run = self._runs.get(operation_id)
        if run is None:
            return False
        run.reason = reason
        run.cancel.set()
        return True

    def cancel_all(self, reason: str) -> None:
        for operation_id in list(self._runs):
            self.cancel(operation_id, reason)

    async def _run(self, operation_id: str, spec: TrainingSpec) -> None:
        run = self._runs[operation_id]
        try:
            async with self._limiter:
                if run.cancel.is_set():  # stopped while queued
                    await self._end(operation_id, _cancelled_status(run), reason=run.reason)
                    return
                run.started = True
                if not await self._end(operation_id, OperationStatus.RUNNING):
                    return  # stopped between the queue and the start
                await self._train(operation_id, spec, run)
        except Exception as exc:  # the top of a run: record any failure on the operation
            log.exception("run %s failed", operation_id)
            await self._end(operation_id, OperationStatus.FAILED, error=f"internal error: {exc!r}")
        finally:
            self._runs.pop(operation_id, None)
            with anyio.CancelScope(shield=True):
                await self._prune(operation_id)

    async def _prune(self, operation_id: str) -> None:
        """Keep the checkpoints within their disk budget once a run has ended: its own extra
        files first, then whole runs, oldest first, never one still training."""
        root = self._artifacts_root
        if root is None:
            return
        budget, active = self._checkpoints, set(self._runs) | set(self._writing_elsewhere())

        def prune() -> None:
            folder = root / operation_id  # the fork/resume points the loop keeps are protected
            prune_run(folder, budget.per_run, keep=protected_names(folder))
            prune_total(root, budget.total, active)  # logs what it deletes

        try:
            await anyio.to_thread.run_sync(prune)
        except OSError:
            log.exception("pruning checkpoints after %s failed", operation_id)

    async def _train(self, operation_id: str, spec: TrainingSpec, run: _Run) -> None:
        send, receive = anyio.create_memory_object_stream[Handed](math.inf)
        sink = _ThreadSink(asyncio.get_running_loop(), send)
        options = self._options
        if self._artifacts_root is not None:
            options = replace(options, artifact_dir=self._artifacts_root / operation_id)
        trained = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume, operation_id, receive)
            if self._system is not None:  # its last sample is stored before the run's end
                tg.start_soon(self._system.follow, operation_id, trained)
            try:
                result = await anyio.to_thread.run_sync(
                    _train_in_thread,
                    spec,
                    sink,
                    run.cancel,
                    options,
                    run.start_from,
                    limiter=self._threads,
                )
            except Exception as exc:
                result = None
                error = str(exc) if _is_spec_problem(exc) else f"internal error: {exc!r}"
                if not _is_spec_problem(exc):
                    log.exception("training %s raised", operation_id)
            finally:
                sink.drain()
                send.close()
                trained.set()
        if result is None:
            await self._end(operation_id, OperationStatus.FAILED, error=error)
            return
        await self._finish(operation_id, result, run)

    async def _finish(self, operation_id: str, result: RunResult, run: _Run) -> None:
        status, error, reason = {
            "completed": (OperationStatus.COMPLETED, None, result.reason),
            "early_stopped": (OperationStatus.COMPLETED, None, f"early stop: {result.reason}"),
            "cancelled": (OperationStatus.CANCELLED, None, run.reason or result.reason),
            "failed": (OperationStatus.FAILED, result.reason, None),
        }[result.outcome]
        if result.outcome == "cancelled":
            status = _cancelled_status(run)
        await self._end(operation_id, status, error=error, reason=reason, device=result.device)

    async def _end(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
        device: str | None = None,
    ) -> bool:
        """Record a status; False when the run was already finished by someone else (a stop that
        raced with the start or the end of the run): the first word stands."""
        try:
            await self._ingestor.record_status(
                operation_id, status, error=error, reason=reason, device=device
            )
        except IllegalTransitionError as exc:
            log.info("run %s: %s", operation_id, exc)
            return False
        return True

    async def _consume(self, operation_id: str, receive: MemoryObjectReceiveStream[Handed]) -> None:
        async with receive:
            async for steps, epoch in receive:
                if epoch is None:
                    await self._ingestor.record_steps(operation_id, steps)
                else:
                    await self._ingestor.record_epoch(operation_id, epoch, steps)


def _cancelled_status(run: _Run) -> OperationStatus:
    """A run stopped by the server shutting down was interrupted, not cancelled by anyone."""
    if run.reason == SHUTDOWN_REASON:
        return OperationStatus.INTERRUPTED
    return OperationStatus.CANCELLED


def _is_spec_problem(exc: Exception) -> bool:
    from trainer.errors import TrainerError

    return isinstance(exc, TrainerError)


def _train_in_thread(
    spec: TrainingSpec,
    sink: _ThreadSink,
    cancel: threading.Event,
    options: TrainerOptions,
    start_from: Path | None,
) -> RunResult:
    from trainer.loop import run_training  # imports torch: only when a run starts

    return run_training(spec, sink, cancel=cancel, options=options, start_from=start_from)
