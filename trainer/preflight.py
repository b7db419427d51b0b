"""What the host allows, and the cheap checks a spec must pass before an operation is created.

`check_spec` is torch-free and reads at most a CSV header, so the server can refuse a bad spec in
the request that carries it. The loop runs it again (a GPU host receives specs over HTTP) and then
does the full checks while loading, before the first epoch.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import DatasetError, SpecError
from trainer.spec import CsvDataset, FactoryDataset, TrainingSpec

__all__ = ["TrainerOptions", "check_spec", "read_csv_header", "resolve_csv_path"]


@dataclass(frozen=True, slots=True)
class TrainerOptions:
    """Host-side settings a spec cannot change.

    `data_roots`: CSV paths must resolve (symlinks followed) under one of these; empty allows none.
    `allow_factory`: run user factory code (the server's `--allow-factory`).
    `artifact_dir`: where best/last checkpoints go; None writes none.
    """

    data_roots: tuple[Path, ...] = ()
    allow_factory: bool = False
    artifact_dir: Path | None = None


def check_spec(spec: TrainingSpec, options: TrainerOptions) -> None:
    """Refuse, cheaply and without torch, a spec that cannot run here.

    Raises `SpecError` (a path outside the data roots, a refused factory) or `DatasetError` (a
    missing, unreadable or empty CSV, a missing column, a factory module that cannot be found).
    """
    dataset = spec.dataset
    if isinstance(dataset, CsvDataset):
        header = read_csv_header(resolve_csv_path(dataset.path, options.data_roots))
        _check_columns(dataset, header)
    elif isinstance(dataset, FactoryDataset):
        _check_factory(dataset.factory, options.allow_factory)


def resolve_csv_path(path: str, data_roots: tuple[Path, ...]) -> Path:
    """The real path of a CSV file under one of `data_roots` (a relative path is tried in each)."""
    if not data_roots:
        raise SpecError("dataset.path", "this host allows no CSV files (no data roots configured)")
    roots = [root.resolve() for root in data_roots]
    given = Path(path).expanduser()
    candidates = [given.resolve()] if given.is_absolute() else [r / given for r in roots]
    inside = [c.resolve() for c in candidates]
    inside = [c for c in inside if _under(c, roots)]
    if not inside:
        allowed = ", ".join(str(r) for r in roots)
        raise SpecError("dataset.path", f"{path!r} is outside the allowed data roots ({allowed})")
    for resolved in inside:
        if resolved.is_file():
            return resolved
    if inside[0].exists():
        raise DatasetError("dataset.path", f"{path!r} is not a regular file")
    raise DatasetError("dataset.path", f"no such file: {path!r} (looked in {inside[0]})")


def read_csv_header(path: Path) -> list[str]:
    """The column names of a CSV file that has at least one data row."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            first = next(reader, None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError("dataset.path", f"cannot read {path.name}: {exc}") from exc
    if header is None or not any(h.strip() for h in header):
        raise DatasetError("dataset.path", f"{path.name} is empty: expected a header row")
    if first is None:
        raise DatasetError("dataset.path", f"{path.name} has a header but no data rows")
    return [h.strip() for h in header]


def _check_columns(dataset: CsvDataset, header: list[str]) -> None:
    if dataset.target not in header:
        raise DatasetError(
            "dataset.target", f"column {dataset.target!r} not in the CSV header {header}"
        )
    missing = [c for c in dataset.features or () if c not in header]
    if missing:
        raise DatasetError("dataset.features", f"columns {missing} not in the CSV header {header}")
    if dataset.features is None and len(header) < 2:
        raise DatasetError("dataset.features", f"no feature columns besides the target in {header}")


def _check_factory(factory: str, allowed: bool) -> None:
    if not allowed:
        raise SpecError(
            "dataset.factory",
            "factory datasets run arbitrary code and this server refuses them; "
            "start it with --allow-factory to allow them",
        )
    module = factory.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise DatasetError("dataset.factory", f"cannot import {module!r}: {exc}") from exc
    if found is None:
        raise DatasetError("dataset.factory", f"no module named {module!r} on this host")


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)
