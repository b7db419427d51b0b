"""Steering runs that already trained: fork one from a checkpoint with changed hyperparameters,
resume one a crash or failure left behind, and name the fork call an analysis recommends.

Checkpoints live in the server's artifacts folder, one sub-folder per run, with an index that
`trainer.retention` writes and reads without torch. A fork is a new run: its spec is the
parent's with the changes applied, its epochs continue from the fork point, the parent's history
up to that point is copied into it (so it reads as one whole run) and `lineage` says where it came
from. A resume is the same run queued again from its last checkpoint.

A script run's (an entry point's) checkpoints are what its script saved through the client in
the folder the server gave it, indexed the same way: `script_steering.py` reruns the declared
entry point from one of them. A script run on a bridge or on Ray keeps its checkpoints there,
out of reach: those are refused.

A bridge run's checkpoints are on its bridge: the server asks the bridge which it holds
(`GET /sessions/{id}/checkpoints`) and starts the fork or the resume there, on the same bridge,
with `start_from` naming the checkpoint (host_bridge/protocol.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host_bridge.protocol import RESTART_ERROR, SHUTDOWN_ERROR, StartFrom
from mcp_server.core.dispatch import BRIDGE_LOST
from mcp_server.core.errors import (
    ConflictError,
    InvalidInputError,
    ServiceError,
    UnavailableError,
    from_validation_error,
    translate,
)
from mcp_server.core.models import StartTrainingResult, merge_flat
from mcp_server.core.notify import Change
from mcp_server.core.script_steering import ScriptSteering
from storage import (
    Backend,
    Lineage,
    Operation,
    OperationStatus,
    copy_history,
    create_operation,
    get_operation,
    latest_values,
    list_operations,
    reopen_operation,
    set_progress,
)
from trainer.analysis import LossAnalysis
from trainer.preflight import check_spec
from trainer.retention import CheckpointIndex, epoch_file, read_index
from trainer.spec import TrainingSpec

if TYPE_CHECKING:
    from mcp_server.config import ServerConfig
    from mcp_server.core.dispatch import BridgeDispatcher
    from mcp_server.core.ingest import Ingestor
    from mcp_server.core.notify import Notifier
    from mcp_server.core.processes import ScriptRunner
    from mcp_server.core.runner import LocalRunner
    from storage import Database

__all__ = ["ForkChanges", "ForkRequest", "ForkResult", "FromEpoch", "Steering"]

log = logging.getLogger(__name__)

FromEpoch = Literal["best", "last"] | int
# Spec fields a fork cannot change: the checkpoint's weights fix them.
_FIXED = ("hidden_sizes", "activation", "dataset", "factory", "csv_path", "val_fraction", "seed")


class ForkChanges(BaseModel):
    """What a fork changes; everything else is the parent's. `epochs` is how many more."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        None, ge=1, le=100_000, description="How many more epochs (default: the parent's rest)"
    )
    learning_rate: float | None = Field(None, gt=0, le=100)
    schedule: Literal["constant", "step", "cosine", "reduce_on_plateau"] | None = None
    weight_decay: float | None = Field(None, ge=0, le=10)
    dropout: float | None = Field(None, ge=0, lt=1)
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    momentum: float | None = Field(None, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: bool | None = Field(None, description="Stop when val_loss stops improving")
    patience: int | None = Field(None, ge=0, le=100_000, description="Early-stopping patience")
    name: str | None = Field(None, max_length=200)


class ForkRequest(BaseModel):
    """A fork_training call: which checkpoint, and what to change (checked as `ForkChanges`,
    after the fields a fork cannot change are refused by name)."""

    model_config = ConfigDict(extra="forbid")

    from_epoch: FromEpoch = Field(
        default="best", description="'best', 'last' or an epoch with a checkpoint"
    )
    changes: dict[str, Any] = Field(
        default_factory=dict,
        description="epochs (how many more), learning_rate, schedule, weight_decay, dropout, "
        "batch_size, optimizer, momentum, grad_clip, early_stopping, patience, name; for a "
        "script run: its entry point's declared parameters (as start_training's params; "
        "epochs is then the script's total) and name",
    )


class ForkResult(StartTrainingResult):
    lineage: Lineage


class Steering:
    """Fork and resume, on the service's storage, runner and notifier."""

    def __init__(
        self,
        config: ServerConfig,
        db: Database,
        notifier: Notifier,
        ingestor: Ingestor,
        runner: LocalRunner,
        bridges: BridgeDispatcher | None = None,
        scripts: ScriptRunner | None = None,
    ) -> None:
        self._config = config
        self._db = db
        self._notifier = notifier
        self._ingestor = ingestor
        self._runner = runner
        self._bridges = bridges
        self._scripts = ScriptSteering(db, ingestor, scripts)
        self._not_resumable: set[str] = set()  # lost bridge runs a resume refused for good

    def _folder(self, operation_id: str) -> Path:
        return self._config.artifacts_dir / operation_id

    async def _get(self, operation_id: str) -> Operation:
        try:
            return await get_operation(self._db, operation_id)
        except Exception as exc:
            raise translate(exc) from exc

    def _check(self, spec: TrainingSpec) -> None:
        try:  # may read a CSV's first lines
            check_spec(spec, self._config.trainer_options)
        except Exception as exc:
            raise translate(exc) from exc

    def _started(self, op: Operation) -> StartTrainingResult:
        from mcp_server.core.service import started_result  # the service imports this module

        return started_result(op)

    async def _steerable(self, operation_id: str, verb: str) -> Operation:
        op = await self._get(operation_id)
        if op.backend is Backend.SCRIPT:  # a script run of this server: script_steering.py
            return op
        if "entry_point" in op.spec:
            raise ConflictError(
                f"operation_id: {operation_id!r} ran its script on a {op.backend.value} backend, "
                "which keeps the script's checkpoints out of this server's reach; only script "
                f"runs of this server, and local and bridge runs, can be {verb}",
                field="operation_id",
            )
        bridge = op.backend is Backend.BRIDGE and self._bridges is not None
        if op.backend is not Backend.LOCAL and not bridge:
            raise ConflictError(
                f"operation_id: {operation_id!r} trained on a {op.backend.value} backend, whose "
                "checkpoints this server cannot reach; only local, bridge and script runs can "
                f"be {verb}",
                field="operation_id",
            )
        return op

    async def _index(self, op: Operation) -> CheckpointIndex:
        """The run's checkpoints: in this server's folder, or as its bridge lists them."""
        if op.backend is Backend.SCRIPT:
            return self._scripts.index(op)[1]
        bridges = self._on_bridge(op)
        if bridges is not None:
            return await bridges.checkpoints(op)
        return read_index(self._folder(op.operation_id))

    def _on_bridge(self, op: Operation) -> BridgeDispatcher | None:
        return self._bridges if op.backend is Backend.BRIDGE else None

    # -- fork -------------------------------------------------------------------------------

    async def fork(self, operation_id: str, request: ForkRequest) -> ForkResult:
        parent = await self._steerable(operation_id, "forked")
        from_epoch, raw = request.from_epoch, dict(request.changes)
        if parent.backend is Backend.SCRIPT:
            epoch = _resolve_epoch(operation_id, from_epoch, self._scripts.index(parent)[1])
            child, lineage = await self._scripts.fork(parent, epoch, raw)
            return ForkResult(**self._started(child).model_dump(), lineage=lineage)
        fixed = [k for k in raw if k in _FIXED]
        if fixed:
            raise InvalidInputError(
                f"changes.{fixed[0]}: cannot change in a fork (the checkpoint's model and data fix "
                "it); start_training a new run instead",
                field=f"changes.{fixed[0]}",
            )
        try:
            wanted = ForkChanges.model_validate(raw)
        except ValidationError as exc:
            raise from_validation_error(exc, prefix="changes") from exc
        folder = self._folder(operation_id)
        bridges = self._on_bridge(parent)
        index = await self._index(parent)
        keeper = "its bridge" if bridges else "the server"
        epoch = _resolve_epoch(operation_id, from_epoch, index, keeper)
        source = folder / epoch_file(epoch)
        if bridges is None and not source.is_file():
            raise InvalidInputError(
                f"from_epoch: the checkpoint of epoch {epoch} is gone; checkpoints exist for "
                f"epochs {read_index(folder).describe()}",
                field="from_epoch",
            )
        spec = _forked_spec(TrainingSpec.model_validate(parent.spec), wanted, epoch)
        if bridges is None:  # a bridge checks its own data when it starts the session
            self._check(spec)
        applied = wanted.model_dump(exclude_none=True, exclude={"name"})
        lineage = Lineage(parent_id=operation_id, from_epoch=epoch, changes=applied)
        child = await create_operation(
            self._db,
            name=wanted.name or f"{parent.name} fork@{epoch}"[:200],
            backend=parent.backend,
            spec=spec.model_dump(mode="json"),
            epochs_total=spec.epochs,
            tags=parent.tags,
            lineage=lineage.model_dump(mode="json"),
            bridge_url=parent.bridge_url,
        )
        start = None if bridges else self._take_in(child.operation_id, folder, index, epoch)
        await copy_history(self._db, operation_id, child.operation_id, up_to_epoch=epoch)
        await set_progress(self._db, child.operation_id, epoch)
        await self._ingestor.announce(child)
        if bridges is not None:
            child = await bridges.start_session(
                child, spec, StartFrom(operation_id=operation_id, epoch=epoch)
            )
        else:
            self._runner.start(child.operation_id, spec, start_from=start)
        started = self._started(child)
        return ForkResult(**started.model_dump(), lineage=lineage)

    def _take_in(self, child_id: str, folder: Path, index: CheckpointIndex, epoch: int) -> Path:
        """Hard-link the starting checkpoint (and the parent's best) into the child's folder now,
        so the parent pruning its own cannot pull them away before the child starts."""
        target = self._folder(child_id)
        target.mkdir(parents=True, exist_ok=True)
        for e in {epoch, index.best}:
            if e is None or not (folder / epoch_file(e)).is_file():
                continue
            try:
                os.link(folder / epoch_file(e), target / epoch_file(e))
            except OSError:  # no hard links here: the trainer copies when it adopts it
                if e == epoch:
                    return folder / epoch_file(e)
        return target / epoch_file(epoch)

    # -- resume -----------------------------------------------------------------------------

    async def resume(self, operation_id: str) -> StartTrainingResult:
        op = await self._steerable(operation_id, "resumed")
        if op.status not in (OperationStatus.INTERRUPTED, OperationStatus.FAILED):
            raise ConflictError(
                f"operation_id: {operation_id!r} is {op.status.value}; resume_training continues "
                "an interrupted or failed run (fork_training starts a new one from any run)",
                field="operation_id",
            )
        if op.backend is Backend.SCRIPT:
            return self._started(await self._scripts.resume(op))
        bridges = self._on_bridge(op)
        index = await self._index(op)
        last = index.last
        if bridges is not None:
            # A bridge killed mid-run may hold a checkpoint of an epoch whose points never
            # reached this server: go on from the newest one the stored history covers.
            last = max((e for e in index.epochs if e <= op.epochs_done), default=None)
        here = self._folder(operation_id) / epoch_file(last or 0)
        if last is None or (bridges is None and not here.is_file()):
            raise ConflictError(
                f"operation_id: {operation_id!r} has no checkpoint to resume from (it stopped "
                "before finishing an epoch); start it again with start_training",
                field="operation_id",
            )
        spec = TrainingSpec.model_validate(op.spec)
        if last >= spec.epochs:
            raise ConflictError(
                f"operation_id: {operation_id!r} already trained all {spec.epochs} epochs; "
                "fork_training with epochs=N trains on",
                field="operation_id",
            )
        if bridges is None:
            self._check(spec)
        try:
            reopened = await reopen_operation(
                self._db,
                operation_id,
                reason=f"resumed from the checkpoint of epoch {last}",
            )
        except Exception as exc:
            raise translate(exc) from exc
        await self._notifier.publish(Change(operation_id, "status", status=reopened.status.value))
        if bridges is not None:
            start = StartFrom(operation_id=operation_id, epoch=last)
            return self._started(await bridges.start_session(reopened, spec, start))
        self._runner.start(
            operation_id, spec, start_from=self._folder(operation_id) / epoch_file(last)
        )
        return self._started(reopened)

    async def resume_interrupted(self) -> list[str]:
        """Resume every local run and script run left `interrupted` that has a checkpoint to
        go on from (a script run only where its script saved one)."""
        resumed = []
        for backend in (Backend.LOCAL, Backend.SCRIPT):
            for op in await list_operations(
                self._db, status=OperationStatus.INTERRUPTED, backend=backend, limit=10_000
            ):
                try:
                    await self.resume(op.operation_id)
                except ServiceError as exc:  # no checkpoint, no longer declared, no room
                    log.warning("not resuming %s: %s", op.operation_id, exc.message)
                    continue
                resumed.append(op.operation_id)
        return resumed

    async def resume_lost_bridge_runs(self) -> list[str]:
        """Resume each bridge run its bridge's loss ended (no heartbeat, killed, restarted, shut
        down) once that bridge answers again and has delivered what it held: from its newest
        checkpoint the stored epochs cover, in the same operation (`serve
        --resume-interrupted`, called by the bridge watchdog). A run a resume refuses (no
        checkpoint yet, a script) stays failed, and is not tried again."""
        if self._bridges is None:
            return []
        lost = [
            op
            for op in await list_operations(
                self._db, status=OperationStatus.FAILED, backend=Backend.BRIDGE, limit=10_000
            )
            if op.operation_id not in self._not_resumable and _lost_with_its_bridge(op)
        ]
        if not lost:
            return []
        healthy = {s.target.url for s in await self._bridges.probe() if s.health is not None}
        resumed = []
        for op in lost:
            if op.bridge_url not in healthy or not await self._bridges.ready_to_resume(op):
                continue
            try:
                await self.resume(op.operation_id)
            except ServiceError as exc:
                log.warning("not resuming %s: %s", op.operation_id, exc.message)
                self._not_resumable.add(op.operation_id)
                continue
            log.warning("resumed %s on %s, its bridge being back", op.operation_id, op.bridge_url)
            resumed.append(op.operation_id)
        return resumed

    # -- what the analysis recommends -------------------------------------------------------

    async def with_next_call(self, operation_id: str, analysis: LossAnalysis) -> LossAnalysis:
        """Name the fork call that acts on `reduce_learning_rate` or `add_regularization`."""
        if analysis.recommendation not in ("reduce_learning_rate", "add_regularization"):
            return analysis
        op = await self._get(operation_id)
        if op.backend not in (Backend.LOCAL, Backend.BRIDGE) or "entry_point" in op.spec:
            return analysis  # a script's parameters are its own: no hyperparameters to name
        try:
            index = await self._index(op)
        except UnavailableError:  # its bridge is away: no call to name
            return analysis
        if index.best is None:
            return analysis
        spec = TrainingSpec.model_validate(op.spec)
        more = max(5, spec.epochs - index.best)
        changes: dict[str, Any] = {"epochs": more}
        if analysis.recommendation == "reduce_learning_rate":
            lrs = [s for s in await latest_values(self._db, operation_id) if s.count]
            current = next((s.value for s in lrs if s.name == "learning_rate"), None)
            changes["learning_rate"] = float(f"{(current or spec.learning_rate) / 3:.3g}")
        else:
            changes["weight_decay"] = float(f"{max(1e-4, spec.weight_decay * 10):.3g}")
            if spec.model.hidden_sizes:
                changes["dropout"] = round(min(0.5, spec.model.dropout + 0.2), 3)
        call = {
            "tool": "fork_training",
            "arguments": {"operation_id": operation_id, "from_epoch": "best", "changes": changes},
        }
        return analysis.model_copy(update={"next_call": call})


def _resolve_epoch(
    operation_id: str, from_epoch: FromEpoch, index: CheckpointIndex, keeper: str = "the server"
) -> int:
    wanted = {"best": index.best, "last": index.last}.get(str(from_epoch))
    if isinstance(from_epoch, int) and not isinstance(from_epoch, bool):
        wanted = from_epoch if from_epoch in index.epochs else None
    if wanted is None or wanted not in index.epochs:
        raise InvalidInputError(
            f"from_epoch: {operation_id!r} has no checkpoint for epoch {from_epoch!r}; "
            f"checkpoints exist for epochs {index.describe()} ({keeper} keeps best and last, "
            "and more epochs within its checkpoint budget)",
            field="from_epoch",
        )
    return wanted


def _forked_spec(parent: TrainingSpec, changes: ForkChanges, epoch: int) -> TrainingSpec:
    """The parent's spec with `changes`; `epochs` becomes the epoch the fork ends at."""
    data = parent.model_dump(mode="json")
    given = changes.model_dump(exclude_none=True, exclude={"name"})
    more = given.pop("epochs", None) or max(1, parent.epochs - epoch)
    data["epochs"] = epoch + more
    merge_flat(data, given)
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="changes") from exc


def _lost_with_its_bridge(op: Operation) -> bool:
    """Whether `op` failed because its bridge went away, not because of the run itself."""
    return op.reason == BRIDGE_LOST or op.error in (RESTART_ERROR, SHUTDOWN_ERROR)
