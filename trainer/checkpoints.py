"""Complete checkpoints, written atomically: a reader never sees a half-written file.

A checkpoint holds everything needed to inspect or resume a run: the model and optimizer state,
the spec as JSON, the epoch and that epoch's metrics. `best.pt` is the best epoch so far by the
monitored metric, `last.pt` the latest finished epoch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import torch
from torch import nn

from trainer.spec import TrainingSpec

__all__ = ["BEST", "LAST", "Checkpoint", "copy_checkpoint", "load_checkpoint", "save_checkpoint"]

BEST = "best.pt"
LAST = "last.pt"


class Checkpoint(TypedDict):
    model: dict[str, Any]
    optimizer: dict[str, Any]
    spec: str  # TrainingSpec JSON
    epoch: int
    metrics: dict[str, float]


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: TrainingSpec,
    epoch: int,
    metrics: dict[str, float],
) -> None:
    """Write a checkpoint to a temp file beside `path`, then rename it over `path`."""
    checkpoint: Checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "spec": spec.model_dump_json(),
        "epoch": epoch,
        "metrics": metrics,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda f: torch.save(checkpoint, f))


def copy_checkpoint(source: Path, path: Path) -> None:
    """Copy a written checkpoint to `path`, atomically (best.pt from last.pt, written once)."""
    with source.open("rb") as f:
        _write_atomically(path, lambda out: shutil.copyfileobj(f, out))


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


def load_checkpoint(path: Path, map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    loaded: Checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    return loaded
