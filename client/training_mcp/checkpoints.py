"""A script's checkpoints, in the folder its training-mcp server gave the run, so that the server
can resume the run (`resume_training`) or fork it (`fork_training`) from one of them.

    run = training_mcp.init()
    start = run.resume_from()                 # None, or where to go on from (epoch, path)
    if start is not None:
        model.load_state_dict(torch.load(start.path)["model"])
    for epoch in range((start.epoch if start else 0) + 1, epochs + 1):
        ...
        run.log(epoch, val_loss=...)
        run.save_checkpoint(epoch, {"model": model.state_dict()}, best=improved)

The protocol, through the environment of a script the server starts:

- `TRAINING_MCP_CHECKPOINT_DIR`: the run's checkpoint folder, the server's. Each checkpoint is
  one file per epoch (`epoch-000012.pt`) and `checkpoints.json` indexes them
  (`training_mcp.checkpoint_index`, the format of the built-in trainer's checkpoints): the
  server reads it to know which epochs a run can be resumed or forked from.
- `TRAINING_MCP_RESUME_EPOCH`: set when the server resumes or forks the run: the epoch to go on
  from, whose file is in the folder. `resume_from()` returns it; None for a fresh run.
- `TRAINING_MCP_CHECKPOINT_BUDGET`: bytes the folder may take (the operator's per-run budget):
  after each save the best and last epochs are kept, then the newest others that fit.

Standard library only: a checkpoint is bytes, a function that writes the file (a framework's
own `save_checkpoint(path)`), or, where torch is installed, anything `torch.save` takes (torch
is imported only then).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training_mcp.checkpoint_index import (
    CheckpointIndex,
    epoch_file,
    read_index,
    retained_epochs,
    write_index,
)

__all__ = [
    "ENV_CHECKPOINT_BUDGET",
    "ENV_CHECKPOINT_DIR",
    "ENV_RESUME_EPOCH",
    "Checkpoint",
    "CheckpointError",
    "Checkpoints",
]

ENV_CHECKPOINT_DIR = "TRAINING_MCP_CHECKPOINT_DIR"
ENV_RESUME_EPOCH = "TRAINING_MCP_RESUME_EPOCH"
ENV_CHECKPOINT_BUDGET = "TRAINING_MCP_CHECKPOINT_BUDGET"

Writer = Callable[[Path], object]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or resumed from; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """A saved epoch: its number and its file."""

    epoch: int
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def load(self, **torch_load: Any) -> Any:
        """`torch.load(path, **torch_load)` (torch must be installed; `map_location`, ...)."""
        import torch  # only here: the client never needs torch otherwise

        return torch.load(self.path, **torch_load)


class Checkpoints:
    """A run's checkpoint folder. Without one (a run registered by hand with no
    `checkpoint_dir`), `resume_from()` is None and `save` raises `CheckpointError`."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None,
        *,
        resume_epoch: int | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._resume_epoch = resume_epoch
        self._budget = budget_bytes

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], folder: str | os.PathLike[str] | None = None
    ) -> Checkpoints:
        """From the variables a server sets (`folder`, given, comes first)."""
        return cls(
            folder if folder is not None else env.get(ENV_CHECKPOINT_DIR) or None,
            resume_epoch=_int(env, ENV_RESUME_EPOCH),
            budget_bytes=_int(env, ENV_CHECKPOINT_BUDGET),
        )

    def index(self) -> CheckpointIndex:
        """The epochs saved so far (empty without a folder)."""
        return read_index(self.folder) if self.folder is not None else CheckpointIndex()

    def resume_from(self) -> Checkpoint | None:
        """Where the server asked this run to go on from: the epoch and its file; None for a
        fresh run. `CheckpointError` if that file is not there."""
        if self._resume_epoch is None or self.folder is None:
            return None
        path = self.folder / epoch_file(self._resume_epoch)
        if not path.is_file():
            raise CheckpointError(
                f"{ENV_RESUME_EPOCH}: no checkpoint of epoch {self._resume_epoch} in {self.folder}"
            )
        return Checkpoint(self._resume_epoch, path)

    def path(self, epoch: int) -> Path:
        """Where epoch `epoch`'s checkpoint goes in the folder."""
        return self._folder() / epoch_file(_epoch(epoch))

    def save(
        self,
        epoch: int,
        state: object = None,
        *,
        best: bool = False,
        writer: Writer | None = None,
    ) -> Checkpoint:
        """Write epoch `epoch`'s checkpoint atomically and index it (the server sees it at
        once); `best`: it is the run's best so far (`fork_training(from_epoch="best")`).
        `state`: bytes, or (torch installed) anything `torch.save` takes; or instead `writer`,
        a function that writes the file at the path it is given (a framework's own
        `save_checkpoint`). Epochs past the budget are deleted, best and last kept."""
        epoch = _epoch(epoch)
        if (state is None) == (writer is None):
            raise ValueError("state: give a state or a writer, not both or neither")
        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / epoch_file(epoch)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            if writer is not None:
                writer(tmp)
            else:
                _write(tmp, state)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self._indexed(folder, epoch, target.stat().st_size, best)
        return Checkpoint(epoch, target)

    def _indexed(self, folder: Path, epoch: int, size: int, best: bool) -> None:
        old = read_index(folder)
        sizes = {e: s for e, s in old.sizes.items() if e in old.epochs}
        sizes[epoch] = size
        # A resumed run saves epochs again past the one it went on from: those are the newest.
        last = epoch
        best_epoch = epoch if best else old.best
        if best_epoch is not None and best_epoch > epoch:  # a best of the run's discarded future
            best_epoch = None
        sizes = {e: s for e, s in sizes.items() if e <= epoch}
        keep = set(sizes)
        if self._budget is not None:
            keep = retained_epochs(sizes, best=best_epoch, last=last, budget_bytes=self._budget)
        write_index(
            folder,
            CheckpointIndex(
                epochs=tuple(sorted(keep)),
                last=last,
                best=best_epoch,
                sizes={e: sizes[e] for e in keep},
            ),
        )
        for gone in set(old.epochs) - keep:  # after the index: it never names a missing file
            with contextlib.suppress(OSError):
                (folder / epoch_file(gone)).unlink()

    def _folder(self) -> Path:
        if self.folder is None:
            raise CheckpointError(
                f"no checkpoint folder: a server-started script gets one in {ENV_CHECKPOINT_DIR}; "
                "by hand, pass checkpoint_dir to training_mcp.init()"
            )
        return self.folder


def _write(path: Path, state: object) -> None:
    if isinstance(state, bytes | bytearray | memoryview):
        path.write_bytes(state)
        return
    try:
        import torch
    except ImportError as exc:
        raise CheckpointError(
            f"state: a {type(state).__name__} needs torch to be saved (torch.save); give bytes "
            "or a function that writes the file"
        ) from exc
    torch.save(state, path)


def _epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch: must be an integer >= 1, got {epoch!r}")
    return epoch


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name) or None
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise CheckpointError(f"{name}: must be an integer, got {raw!r}") from exc
