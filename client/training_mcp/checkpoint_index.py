"""The checkpoint index: which epochs a run's checkpoint folder holds. Standard library only.

A run's checkpoint folder holds one file per kept epoch (`epoch-000012.pt`) and
`checkpoints.json`, the index a server reads to say which epochs a run can be resumed or forked
from, without loading torch. One format for every writer: the built-in trainer
(`trainer.retention` re-exports this module) and a script's `training_mcp` client
(`training_mcp.checkpoints`). The best and the last epoch are always kept; other epochs are kept
newest first while their files fit in a per-run byte budget (`retained_epochs`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "INDEX",
    "CheckpointIndex",
    "epoch_file",
    "read_index",
    "retained_epochs",
    "write_index",
]

INDEX = "checkpoints.json"


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:06d}.pt"


@dataclass(frozen=True)
class CheckpointIndex:
    """What a checkpoint folder holds: the epochs kept, and which of them are last and best."""

    epochs: tuple[int, ...] = ()
    last: int | None = None
    best: int | None = None
    sizes: Mapping[int, int] = field(default_factory=dict)  # epoch -> bytes on disk

    def path(self, folder: Path, epoch: int) -> Path:
        return folder / epoch_file(epoch)

    def describe(self) -> str:
        """'3 (best), 10 (last), 8, 9' or 'none': for error messages."""
        if not self.epochs:
            return "none"
        marks = {e: [] for e in self.epochs}  # type: dict[int, list[str]]
        if self.best in marks:
            marks[self.best].append("best")
        if self.last in marks:
            marks[self.last].append("last")
        first = [e for e in (self.best, self.last) if e in marks]
        order = list(dict.fromkeys([*first, *sorted(self.epochs)]))
        return ", ".join(f"{e} ({', '.join(marks[e])})" if marks[e] else str(e) for e in order)


def retained_epochs(
    sizes: Mapping[int, int], *, best: int | None, last: int | None, budget_bytes: int
) -> set[int]:
    """The epochs to keep: best and last always, then the newest others that fit the budget.

    A pure decision over epoch -> file size; the writer deletes the rest.
    """
    keep = {e for e in (best, last) if e is not None and e in sizes}
    spent = 0
    for epoch in sorted(sizes, reverse=True):
        if epoch in keep:
            continue
        if spent + sizes[epoch] > budget_bytes:
            break
        spent += sizes[epoch]
        keep.add(epoch)
    return keep


def read_index(folder: Path) -> CheckpointIndex:
    """The folder's index; an empty one where there is none (no checkpoints, or an older run)."""
    try:
        raw = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return CheckpointIndex()
    epochs = tuple(int(e) for e in raw.get("epochs", ()))
    sizes = {int(k): int(v) for k, v in raw.get("sizes", {}).items()}
    return CheckpointIndex(epochs=epochs, last=raw.get("last"), best=raw.get("best"), sizes=sizes)


def write_index(folder: Path, index: CheckpointIndex) -> None:
    """Write the index atomically (a temp file renamed over it)."""
    body = json.dumps(
        {
            "epochs": sorted(index.epochs),
            "last": index.last,
            "best": index.best,
            "sizes": {str(k): v for k, v in sorted(index.sizes.items())},
        },
        separators=(",", ":"),
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, folder / INDEX)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
