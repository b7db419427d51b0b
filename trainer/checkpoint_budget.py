"""The checkpoints' disk budget: per run and in total, pruned oldest first. Torch-free.

Each run writes its checkpoints into its own folder (`<artifacts root>/<operation_id>/`). Two
limits keep them from filling the disk:

- `prune_run(run_dir, max_bytes)`: inside one run, delete its oldest checkpoint files (never
  `best.pt` or `last.pt`) until the run takes at most `max_bytes`. For writers of extra
  checkpoints (per-epoch ones for fork and resume): call it after each write.
- `prune_total(root, max_bytes, active=...)`: across runs, delete whole run folders, the run whose
  newest file is oldest first, never one of `active` (training now), until all take at most
  `max_bytes`. The server and the bridge call it when a run ends.

`delete_run(root, operation_id)` removes one run's checkpoints (with the run). Every function
returns what it deleted, so a caller can log it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PROTECTED",
    "CheckpointBudget",
    "delete_run",
    "prune_run",
    "prune_total",
    "run_bytes",
]

log = logging.getLogger(__name__)

PROTECTED = frozenset({"best.pt", "last.pt"})  # a run's own restore points: pruned with the run


@dataclass(frozen=True, slots=True)
class CheckpointBudget:
    """`per_run`: bytes one run's checkpoints may take; `total`: bytes all runs' may take.
    None turns a limit off."""

    per_run: int | None = 2 * 1024**3
    total: int | None = 20 * 1024**3

    def __post_init__(self) -> None:
        for name in ("per_run", "total"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: must be at least 0 bytes, got {value}")


def _files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.rglob("*") if p.is_file()]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _disk_bytes(files: list[Path]) -> int:
    """Bytes the files take on disk: hard links to one file (best.pt, last.pt) count once."""
    seen: dict[tuple[int, int], int] = {}
    for path in files:
        try:
            st = path.stat()
        except OSError:  # deleted meanwhile
            continue
        seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def _freed(path: Path) -> int:
    """What deleting `path` frees: nothing while another hard link keeps the file."""
    try:
        st = path.stat()
    except OSError:
        return 0
    return st.st_size if st.st_nlink <= 1 else 0


def run_bytes(run_dir: Path) -> int:
    """Bytes of every file in one run's folder (hard links counted once)."""
    return _disk_bytes(_files(run_dir))


def prune_run(
    run_dir: Path, max_bytes: int | None, keep: Collection[str] = PROTECTED
) -> list[Path]:
    """Delete the run's oldest files (by modification time) whose names are not in `keep` until
    the folder takes at most `max_bytes`. Returns the deleted files, oldest first."""
    if max_bytes is None:
        return []
    files = _files(run_dir)
    used = _disk_bytes(files)
    deleted: list[Path] = []
    for path in sorted((p for p in files if p.name not in keep), key=_mtime):
        if used <= max_bytes:
            break
        size = _freed(path)
        path.unlink(missing_ok=True)
        used -= size
        deleted.append(path)
    return deleted


def prune_total(root: Path, max_bytes: int | None, active: Collection[str] = ()) -> list[Path]:
    """Delete whole run folders under `root`, least recently written first, skipping `active`
    runs, until all checkpoints take at most `max_bytes`. Returns the deleted folders."""
    if max_bytes is None or not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir()]
    sizes = {p: run_bytes(p) for p in runs}
    used = sum(sizes.values())
    deleted: list[Path] = []

    def newest(folder: Path) -> float:
        return max((_mtime(p) for p in _files(folder)), default=_mtime(folder))

    for folder in sorted((p for p in runs if p.name not in active), key=newest):
        if used <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        used -= sizes[folder]
        deleted.append(folder)
        log.info("checkpoints of %s pruned (total over %d bytes)", folder.name, max_bytes)
    return deleted


def delete_run(root: Path, operation_id: str) -> int:
    """Remove one run's checkpoint folder; the bytes freed (0 if it had none)."""
    folder = root / operation_id
    if folder.parent != root or not folder.is_dir():
        return 0
    freed = run_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return freed
