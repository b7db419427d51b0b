"""What the host allows, and the cheap checks a spec must pass before an operation is created.

`check_spec` is torch-free and reads at most a CSV header and first row (within `MAX_HEADER_BYTES`),
so the server can refuse a bad spec in the request that carries it, resource budget included
(`trainer.budget`). It blocks on the disk: callers on an event loop run it in a thread. The loop
runs it again (a GPU host receives specs over HTTP) and then does the full checks while loading,
before the first epoch. Errors about a file name the file and the problem, never its contents.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainer.budget import ResourceLimits, check_budget, estimate_resources
from trainer.errors import DatasetError, SpecError
from trainer.spec import CsvDataset, FactoryDataset, TrainingSpec

__all__ = [
    "MAX_HEADER_BYTES",
    "TrainerOptions",
    "check_spec",
    "read_csv_header",
    "resolve_csv_path",
    "stdout_to_stderr",
]

MAX_HEADER_BYTES = 1024 * 1024  # a CSV's header line and first row, each


@dataclass(frozen=True, slots=True)
class TrainerOptions:
    """Host-side settings a spec cannot change.

    `data_roots`: CSV paths must resolve (symlinks followed) under one of these; empty allows none.
    `allow_factory`: run user factory code (the server's `--allow-factory`).
    `artifact_dir`: where checkpoints go; None writes none.
    `limits`: the resource budget a spec must fit (`trainer.budget`); None checks none.
    `checkpoint_budget_bytes`: the bytes a run's checkpoint folder may take (None: no limit);
    within it the loop keeps the newest epochs' checkpoints besides the best and the last (0:
    just those two), so forks can start from recent epochs.
    """

    data_roots: tuple[Path, ...] = ()
    allow_factory: bool = False
    artifact_dir: Path | None = None
    limits: ResourceLimits | None = None
    checkpoint_budget_bytes: int | None = 0


def check_spec(spec: TrainingSpec, options: TrainerOptions) -> None:
    """Refuse, cheaply and without torch, a spec that cannot run here.

    Raises `SpecError` (a path outside the data roots, a refused factory, a run over the resource
    budget) or `DatasetError` (a missing, unreadable or empty CSV, a missing column, a factory
    module that cannot be found).
    """
    dataset = spec.dataset
    columns = rows = None
    if isinstance(dataset, CsvDataset):
        path = resolve_csv_path(dataset.path, options.data_roots)
        header, rows = _csv_shape(path)
        _check_columns(dataset, header, path.name)
        columns = len(header)
    elif isinstance(dataset, FactoryDataset):
        _check_factory(dataset.factory, options.allow_factory)
    check_budget(estimate_resources(spec, csv_columns=columns, csv_rows=rows), options.limits)


def resolve_csv_path(path: str, data_roots: tuple[Path, ...]) -> Path:
    """The real path of a CSV file under one of `data_roots` (a relative path is tried in each)."""
    if not data_roots:
        raise SpecError("dataset.path", "this host allows no CSV files (no data roots configured)")
    if "\x00" in path:
        raise SpecError("dataset.path", "a path must not contain a NUL byte")
    roots = [root.resolve() for root in data_roots]
    try:
        given = Path(path).expanduser()
        candidates = [given.resolve()] if given.is_absolute() else [r / given for r in roots]
        inside = [c.resolve() for c in candidates]
    except (OSError, RuntimeError, ValueError) as exc:
        message = f"{path!r} is not a usable path ({type(exc).__name__})"
        raise SpecError("dataset.path", message) from exc
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
    return _csv_shape(path)[0]


def _csv_shape(path: Path) -> tuple[list[str], int]:
    """(column names, estimated data rows: the file's size over its first row's). Reads two lines,
    each at most `MAX_HEADER_BYTES`; a message names the file and the problem, never a cell."""
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            lines = [f.readline(MAX_HEADER_BYTES + 1), f.readline(MAX_HEADER_BYTES + 1)]
    except OSError as exc:
        raise DatasetError("dataset.path", f"cannot read {name}: {exc.strerror}") from exc
    if any(len(line) > MAX_HEADER_BYTES for line in lines):
        raise DatasetError(
            "dataset.path",
            f"{name}: a line of the header or first row is longer than {MAX_HEADER_BYTES} bytes; "
            "is it a CSV file?",
        )
    try:
        text = b"".join(lines).decode("utf-8-sig")
        rows = [r for r in csv.reader(io.StringIO(text, newline=""))]
    except UnicodeDecodeError as exc:
        raise DatasetError("dataset.path", f"{name} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise DatasetError("dataset.path", f"{name} is not a readable CSV file") from exc
    header = rows[0] if rows else None
    if header is None or not any(h.strip() for h in header):
        raise DatasetError("dataset.path", f"{name} is empty: expected a header row")
    if len(rows) < 2:
        raise DatasetError("dataset.path", f"{name} has a header but no data rows")
    estimated = max(1, (size - len(lines[0])) // max(1, len(lines[1])))
    return [h.strip() for h in header], estimated


def _check_columns(dataset: CsvDataset, header: list[str], name: str = "the CSV file") -> None:
    if dataset.target not in header:
        raise DatasetError(
            "dataset.target",
            f"column {dataset.target!r} is not in the header of {name} ({len(header)} columns)",
        )
    missing = [c for c in dataset.features or () if c not in header]
    if missing:
        raise DatasetError("dataset.features", f"columns {missing} are not in the header of {name}")
    if dataset.features is None and len(header) < 2:
        raise DatasetError("dataset.features", f"{name} has no feature columns besides the target")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While importing user code: whatever it prints goes to stderr, never onto stdout (which
    belongs to the MCP stdio transport)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _check_factory(factory: str, allowed: bool) -> None:
    if not allowed:
        raise SpecError(
            "dataset.factory",
            "factory datasets run arbitrary code and this server refuses them; "
            "start it with --allow-factory to allow them",
        )
    module = factory.partition(":")[0]
    try:
        with stdout_to_stderr():  # finding a.b imports package a, which may print
            found = importlib.util.find_spec(module)
    except Exception as exc:  # the operator's code: whatever it raises, the factory is unusable
        raise DatasetError("dataset.factory", f"cannot import {module!r}: {exc!r}") from exc
    if found is None:
        raise DatasetError("dataset.factory", f"no module named {module!r} on this host")


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)
