"""Which epochs' checkpoints a run keeps, and the index that says so. Torch-free.

A run's checkpoint folder holds one file per kept epoch (`epoch-000012.pt`), `last.pt` and
`best.pt` as hard links to two of them (no extra bytes), and `checkpoints.json`: the index the
server reads to say which epochs a run can be forked from, without loading torch. The best and the
last epoch are always kept; other epochs are kept newest first while their files fit in the
operator's per-run budget (`TrainerOptions.checkpoint_budget_bytes`: the whole folder as
`trainer.checkpoint_budget` counts it, links included; 0 keeps best and last only).

The index's format lives in the light client (`training_mcp.checkpoint_index`, standard library
only), because a script run's client writes the same index for its own checkpoints: one format,
read the same way for both kinds of run.
"""

from __future__ import annotations

from pathlib import Path

from training_mcp.checkpoint_index import (
    INDEX,
    CheckpointIndex,
    epoch_file,
    read_index,
    retained_epochs,
    write_index,
)

__all__ = [
    "BEST",
    "INDEX",
    "LAST",
    "CheckpointIndex",
    "epoch_file",
    "protected_names",
    "read_index",
    "retained_epochs",
    "write_index",
]

BEST = "best.pt"
LAST = "last.pt"


def protected_names(folder: Path) -> frozenset[str]:
    """The files of a run's folder that disk-budget pruning must leave: the index, the best and
    last links and the epoch files they point at."""
    index = read_index(folder)
    kept = {epoch_file(e) for e in (index.best, index.last) if e is not None}
    return frozenset({BEST, LAST, INDEX, *kept})
