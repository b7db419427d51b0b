"""Resume and fork of script runs (entry points), from the checkpoints their scripts saved.

A script run's checkpoint folder is the server's (`<artifacts>/<operation_id>/`, given to the
script as TRAINING_MCP_CHECKPOINT_DIR); its script saves epochs there through the client
(`training_mcp.Run.save_checkpoint`), indexed in the built-in trainer's format
(`training_mcp.checkpoint_index`), so the server knows which epochs it can go on from without
asking the script.

- resume: the same entry point with the same parameters, in the same operation, history kept;
  TRAINING_MCP_RESUME_EPOCH names the newest checkpoint the stored history covers, and the
  script's `run.resume_from()` returns it.
- fork: a new run of the same entry point with some declared parameters changed (nothing else
  can change: what runs is still only what the operator declared), started from a checkpoint
  epoch hard-linked into its own folder, the parent's history up to that epoch copied in.

`Steering` checks what both kinds of run share (the status, the epoch asked for) and calls here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mcp_server.core.entry_points import EntryPoint, epochs_total
from mcp_server.core.errors import ConflictError, InvalidInputError, UnavailableError, translate
from storage import (
    Backend,
    Lineage,
    Operation,
    OperationStatus,
    copy_history,
    create_operation,
    new_operation_id,
    reopen_operation,
    set_progress,
)
from trainer.retention import CheckpointIndex, epoch_file, read_index, write_index

if TYPE_CHECKING:
    from mcp_server.core.ingest import Ingestor
    from mcp_server.core.processes import ScriptRunner
    from storage import Database

__all__ = ["ScriptSteering"]


class ScriptSteering:
    """Resume and fork of this server's script runs, on its storage and script runner."""

    def __init__(self, db: Database, ingestor: Ingestor, scripts: ScriptRunner | None) -> None:
        self._db = db
        self._ingestor = ingestor
        self._scripts = scripts

    def _runner(self) -> ScriptRunner:
        if self._scripts is None:
            raise UnavailableError(
                "operation_id: this server runs no scripts (start it with --entry-points)",
                field="operation_id",
            )
        return self._scripts

    def index(self, op: Operation) -> tuple[Path, CheckpointIndex]:
        """The run's checkpoint folder and what its script saved there."""
        folder = self._runner().checkpoint_folder(op.operation_id)
        if folder is None:
            raise UnavailableError(
                "operation_id: this server keeps no checkpoints for script runs",
                field="operation_id",
            )
        return folder, read_index(folder)

    def _entry(self, op: Operation) -> EntryPoint:
        """The run's entry point, as the operator declares it now."""
        runner = self._runner()
        name = str(op.spec.get("entry_point"))
        declared = runner.entry_points().entry_points
        entry = next((e for e in declared if e.name == name), None)
        if entry is None:
            allowed = ", ".join(sorted(e.name for e in declared)) or "none"
            raise ConflictError(
                f"operation_id: {op.operation_id!r} ran entry point {name!r}, which this server "
                f"no longer declares (declared: {allowed}); nothing else can run in its place",
                field="operation_id",
            )
        return entry

    # -- resume -----------------------------------------------------------------------------

    async def resume(self, op: Operation) -> Operation:
        """Start the run's script again in the same operation, from its newest checkpoint the
        stored history covers (a killed script may have saved one whose points never came)."""
        runner = self._runner()
        operation_id = op.operation_id
        entry = self._entry(op)
        folder, index = self.index(op)
        last = max(
            (e for e in index.epochs if e <= op.epochs_done and (folder / epoch_file(e)).is_file()),
            default=None,
        )
        if last is None:
            raise ConflictError(
                f"operation_id: {operation_id!r} has no checkpoint to resume from (its script "
                "saved none through training_mcp's run.save_checkpoint for an epoch it "
                f"reported; saved: {index.describe()}); start it again with start_training",
                field="operation_id",
            )
        if op.epochs_total is not None and last >= op.epochs_total:
            raise ConflictError(
                f"operation_id: {operation_id!r} already trained all {op.epochs_total} epochs; "
                "fork_training with a larger epochs parameter trains on",
                field="operation_id",
            )
        if runner.following(operation_id):
            raise ConflictError(
                f"operation_id: {operation_id!r} has a script still ending; try again",
                field="operation_id",
            )
        try:  # the declaration as it is now: its bounds and data roots may have changed
            argv, _ = runner.resolve(entry, op.spec.get("params"), operation_id)
        except InvalidInputError as exc:
            raise ConflictError(
                f"operation_id: {operation_id!r} cannot run again with its parameters, which "
                f"its entry point no longer allows: {exc.message}",
                field="operation_id",
            ) from exc
        runner.check_room("operation_id")
        try:
            await reopen_operation(
                self._db, operation_id, reason=f"resumed from the checkpoint of epoch {last}"
            )
            running = await self._ingestor.record_status(operation_id, OperationStatus.RUNNING)
        except Exception as exc:
            raise translate(exc) from exc
        return await runner.launch(running, entry, argv, resume_epoch=last)

    # -- fork -------------------------------------------------------------------------------

    async def fork(
        self, parent: Operation, epoch: int, changes: Mapping[str, Any]
    ) -> tuple[Operation, Lineage]:
        """A new run of the parent's entry point from its checkpoint of `epoch`, with the
        declared parameters in `changes` changed (and `name`)."""
        runner = self._runner()
        entry = self._entry(parent)
        raw = dict(changes)
        name = raw.pop("name", None)
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
            raise InvalidInputError(
                f"changes.name: must be a string of 1 to 200 characters, got {name!r}",
                field="changes.name",
            )
        declared = [p.name for p in entry.parameters]
        unknown = sorted(set(raw) - set(declared))
        if unknown:
            raise InvalidInputError(
                f"changes.{unknown[0]}: not a declared parameter of entry point {entry.name!r}; "
                f"a fork of a script run changes its declared parameters: "
                f"{', '.join(declared) or 'none'} (and name)",
                field=f"changes.{unknown[0]}",
            )
        child_id = new_operation_id()
        params = {**dict(parent.spec.get("params") or {}), **raw}
        try:
            argv, values = runner.resolve(entry, params, child_id)
        except InvalidInputError as exc:  # `params.X: ...`, named as the fork's field
            field = (exc.field or "changes").replace("params.", "changes.", 1)
            raise InvalidInputError(
                exc.message.replace("params.", "changes.", 1), field=field
            ) from exc
        total = epochs_total(values)
        if total is not None and total <= epoch:
            raise InvalidInputError(
                f"changes.epochs: the fork goes on after epoch {epoch}, so the script's epochs "
                f"(its total) must be more than {epoch}; it would be {total}",
                field="changes.epochs",
            )
        runner.check_room("operation_id")
        folder, index = self.index(parent)
        child_folder = runner.checkpoint_folder(child_id)
        assert child_folder is not None  # the parent's folder exists: so does the root
        await anyio.to_thread.run_sync(_take_in, folder, child_folder, index, epoch)
        applied = {k: values[k] for k in raw}
        lineage = Lineage(parent_id=parent.operation_id, from_epoch=epoch, changes=applied)
        child = await create_operation(
            self._db,
            name=name or f"{parent.name} fork@{epoch}"[:200],
            backend=Backend.SCRIPT,
            spec={"entry_point": entry.name, "params": values, "argv": argv},
            epochs_total=total,
            tags=parent.tags,
            status=OperationStatus.RUNNING,
            operation_id=child_id,
            lineage=lineage.model_dump(mode="json"),
        )
        await copy_history(self._db, parent.operation_id, child_id, up_to_epoch=epoch)
        await set_progress(self._db, child_id, epoch)
        await self._ingestor.announce(child)
        return await runner.launch(child, entry, argv, resume_epoch=epoch), lineage


def _take_in(folder: Path, child: Path, index: CheckpointIndex, epoch: int) -> None:
    """The fork's starting checkpoint in its own folder (a hard link: no bytes copied, and the
    parent pruning its own cannot pull it away), indexed as the child's one epoch so far."""
    source = folder / epoch_file(epoch)
    child.mkdir(parents=True, exist_ok=True)
    target = child / epoch_file(epoch)
    try:
        os.link(source, target)
    except FileNotFoundError as exc:
        raise InvalidInputError(
            f"from_epoch: the checkpoint of epoch {epoch} is gone; checkpoints exist for "
            f"epochs {read_index(folder).describe()}",
            field="from_epoch",
        ) from exc
    except FileExistsError:  # taken in already
        pass
    except OSError:  # no hard links on this file system
        shutil.copy2(source, target)
    best = epoch if index.best == epoch else None
    size = target.stat().st_size
    write_index(child, CheckpointIndex(epochs=(epoch,), last=epoch, best=best, sizes={epoch: size}))
