"""Complete checkpoints, written atomically: a reader never sees a half-written file.

A checkpoint holds everything needed to resume or fork a run exactly: the model, optimizer and
scheduler state, the spec as JSON, the epoch, the global step, every epoch's metrics so far (the
early stopper replays them), and the random state: torch's global generator, Python's `random`,
each dropout layer's generator and the data-order generator. `Checkpointer` writes one file per
epoch, points `last.pt` and `best.pt` at two of them, and keeps what `trainer.retention` decides.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import torch
from torch import Tensor, nn

from trainer.batches import Batches
from trainer.models import SeededDropout
from trainer.retention import (
    BEST,
    LAST,
    CheckpointIndex,
    epoch_file,
    read_index,
    retained_epochs,
    write_index,
)
from trainer.spec import TrainingSpec

__all__ = [
    "BEST",
    "LAST",
    "Checkpoint",
    "Checkpointer",
    "RandomState",
    "capture_random_state",
    "load_checkpoint",
    "restore_random_state",
    "save_checkpoint",
]


class RandomState(TypedDict):
    torch: Tensor
    python: tuple[Any, ...]
    data: Tensor
    dropout: list[Tensor | None]  # one per SeededDropout layer, in model order


class Checkpoint(TypedDict):
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    spec: str  # TrainingSpec JSON
    epoch: int
    step: int
    metrics: dict[str, float]
    history: list[dict[str, float]]  # epoch i + 1's metrics at index i
    rng: RandomState


def capture_random_state(model: nn.Module, batches: Batches) -> RandomState:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "data": batches.rng_state(),
        "dropout": [m.rng_state() for m in model.modules() if isinstance(m, SeededDropout)],
    }


def restore_random_state(
    state: RandomState, model: nn.Module, batches: Batches, device: torch.device
) -> None:
    """Put every generator back; dropout layers a fork added keep their fresh seeded state."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    batches.set_rng_state(state["data"])
    layers = [m for m in model.modules() if isinstance(m, SeededDropout)]
    for layer, saved in zip(layers, state["dropout"], strict=False):
        if saved is not None:
            layer.set_rng_state(saved, device)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint to a temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    loaded: Checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    return loaded


class Checkpointer:
    """A run's checkpoint folder: one file per kept epoch, `last.pt`/`best.pt` links, the index.

    `budget_bytes` bounds the files kept beside the best and the last epoch's (oldest go first).
    """

    def __init__(self, folder: Path, budget_bytes: int | None = 0) -> None:
        self.folder = folder
        self.budget_bytes = budget_bytes
        index = read_index(folder)
        self._sizes = dict(index.sizes)
        self._best = index.best
        self._last = index.last

    @property
    def index(self) -> CheckpointIndex:
        return CheckpointIndex(
            epochs=tuple(sorted(self._sizes)),
            last=self._last,
            best=self._best,
            sizes=dict(self._sizes),
        )

    def save(self, checkpoint: Checkpoint, *, improved: bool) -> None:
        epoch = checkpoint["epoch"]
        path = self.folder / epoch_file(epoch)
        save_checkpoint(path, checkpoint)
        self._adopt(path, epoch, last=True, best=improved)

    def adopt(self, source: Path, epoch: int, *, last: bool, best: bool) -> None:
        """Take another folder's checkpoint in (a fork's starting point) as a hard link."""
        target = self.folder / epoch_file(epoch)
        self.folder.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            _link_atomically(source, target)
        self._adopt(target, epoch, last=last, best=best)

    def _adopt(self, path: Path, epoch: int, *, last: bool, best: bool) -> None:
        self._sizes[epoch] = path.stat().st_size
        if last:
            _link_atomically(path, self.folder / LAST)
            self._last = epoch
        if best:
            _link_atomically(path, self.folder / BEST)
            self._best = epoch
        keep = retained_epochs(
            self._sizes, best=self._best, last=self._last, budget_bytes=self._room()
        )
        dropped = [e for e in self._sizes if e not in keep]
        self._sizes = {e: s for e, s in self._sizes.items() if e in keep}
        write_index(self.folder, self.index)  # the index never names a file that is gone
        _unlink(self.folder / epoch_file(e) for e in dropped)

    def _room(self) -> int:
        """Bytes left for other epochs once the best and the last epoch's files are counted (the
        links to them take no more) and a little for the index."""
        if self.budget_bytes is None:
            return 2**62
        protected = {e for e in (self._best, self._last) if e is not None}
        used = sum(self._sizes.get(e, 0) for e in protected)
        return max(0, self.budget_bytes - used - 4096)


def _unlink(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _link_atomically(source: Path, path: Path) -> None:
    """`path` becomes `source` (a hard link: no bytes copied), replacing what it was at once."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: copy instead
        with source.open("rb") as f:
            _write_atomically(path, lambda out: shutil.copyfileobj(f, out))
        return
    os.replace(tmp, path)


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    # fsync before the rename: after a crash `path` holds the old checkpoint or the new one
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_spec(checkpoint: Checkpoint) -> TrainingSpec:
    return TrainingSpec.model_validate_json(checkpoint["spec"])
