"""Loading a spec's dataset into tensors (or a factory's datasets), split and standardised.

Every problem with the data is raised here as a `DatasetError`, before the first epoch. Synthetic
sets and the train/validation split come from generators seeded with `spec.seed`, so the same spec
gives the same data on any machine.
"""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Sized
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from trainer.errors import DatasetError
from trainer.preflight import TrainerOptions, resolve_csv_path, stdout_to_stderr
from trainer.spec import CsvDataset, FactoryDataset, SyntheticDataset, TrainingSpec

__all__ = ["Data", "Task", "load_data"]

Task = Literal["classification", "regression"]
_MAX_CLASSES_AUTO = 20  # an integer target with at most this many values is taken as classes


@dataclass(frozen=True)
class Data:
    """What the loop trains on. `model` is set only for factory datasets (their own model)."""

    train: Dataset[tuple[Tensor, ...]]
    val: Dataset[tuple[Tensor, ...]] | None
    task: Task
    n_features: int
    n_outputs: int  # classes, or regression targets; 0 for a factory (its model decides)
    model: nn.Module | None = None


def load_data(spec: TrainingSpec, options: TrainerOptions) -> Data:
    """Build the datasets a spec names. Raises `DatasetError` for anything wrong with the data."""
    dataset = spec.dataset
    if isinstance(dataset, FactoryDataset):
        return _from_factory(spec, dataset)
    if isinstance(dataset, CsvDataset):
        x, y, task = _read_csv(dataset, options)
    else:
        x, y, task = _synthetic(dataset, spec.seed)
    return _split(x, y, task, spec.val_fraction, spec.seed)


def _synthetic(dataset: SyntheticDataset, seed: int) -> tuple[Tensor, Tensor, Task]:
    g = torch.Generator().manual_seed(seed)
    n, noise = dataset.n_samples, dataset.noise
    if dataset.name == "blobs":
        return *_blobs(n, 1.0 if noise is None else noise, g), "classification"
    if dataset.name == "noisy_spirals":
        return *_noisy_spirals(n, 0.05 if noise is None else noise, g), "classification"
    return *_sine(n, 0.1 if noise is None else noise, g), "regression"


def _blobs(n: int, std: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Three Gaussian clusters 4 apart from the origin, 120 degrees apart."""
    y = torch.randint(0, 3, (n,), generator=g)
    angle = y.double() * (2 * math.pi / 3)
    centers = 4.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centers + std * torch.randn(n, 2, generator=g, dtype=torch.float64), y


def _noisy_spirals(n: int, std: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two one-turn spirals, 10% of labels flipped, plus 6 features of pure noise.

    The spirals take a large MLP ~7 epochs to learn; the noise features and flipped labels are what
    it then memorises, which is what makes val_loss turn up.
    """
    y = torch.randint(0, 2, (n,), generator=g)
    radius = 0.15 + 0.85 * torch.rand(n, generator=g, dtype=torch.float64)
    angle = 2 * math.pi * radius + math.pi * y
    xy = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    xy += std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    distractors = torch.randn(n, 6, generator=g, dtype=torch.float64)
    flipped = torch.rand(n, generator=g) < 0.1
    return torch.cat([xy, distractors], dim=1), torch.where(flipped, 1 - y, y)


def _sine(n: int, std: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    x = 6.0 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 3.0
    return x, x.sin() + std * torch.randn(n, 1, generator=g, dtype=torch.float64)


def _split(x: Tensor, y: Tensor, task: Task, val_fraction: float, seed: int) -> Data:
    """Shuffle into train/validation and standardise features with the training split's stats."""
    n = len(x)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise DatasetError(
            "val_fraction", f"{val_fraction} of {n} rows leaves no training rows; lower it"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    train_idx, val_idx = order[n_val:], order[:n_val]
    mean = x[train_idx].mean(dim=0)
    std = x[train_idx].std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x = ((x - mean) / std).float()
    y = y.long() if task == "classification" else y.float()
    n_outputs = int(y.max()) + 1 if task == "classification" else y.shape[1]
    val = TensorDataset(x[val_idx], y[val_idx]) if n_val else None
    return Data(TensorDataset(x[train_idx], y[train_idx]), val, task, x.shape[1], n_outputs)


def _read_csv(dataset: CsvDataset, options: TrainerOptions) -> tuple[Tensor, Tensor, Task]:
    path = resolve_csv_path(dataset.path, options.data_roots)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(
            "dataset.path", f"cannot read {path.name}: not a readable UTF-8 CSV file"
        ) from exc
    if not rows:
        raise DatasetError("dataset.path", f"{path.name} is empty: expected a header row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise DatasetError("dataset.path", f"{path.name} has a header but no data rows")
    if dataset.target not in header:
        raise DatasetError(
            "dataset.target", f"column {dataset.target!r} is not in the header of {path.name}"
        )
    features = list(dataset.features or [c for c in header if c != dataset.target])
    missing = [c for c in features if c not in header]
    if missing:
        raise DatasetError(
            "dataset.features", f"columns {missing} are not in the header of {path.name}"
        )
    if not features:
        raise DatasetError(
            "dataset.features", f"{path.name} has no feature columns besides the target"
        )
    columns = [header.index(c) for c in features]
    target_col = header.index(dataset.target)
    values: list[list[float]] = []
    labels: list[str] = []
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(
                "dataset.path", f"line {line} has {len(row)} fields, the header {len(header)}"
            )
        values.append([_number(row[c], header[c], line) for c in columns])
        labels.append(row[target_col].strip())
    y, task = _target(labels, dataset)
    return torch.tensor(values, dtype=torch.float64), y, task


def _number(cell: str, column: str, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(
            "dataset.features",
            f"column {column!r} line {line}: the value is not a finite number",
        )
    return value


def _target(labels: list[str], dataset: CsvDataset) -> tuple[Tensor, Task]:
    """Targets as class indices (in sorted label order) or floats, inferring the task if asked."""
    numbers = _finite_numbers(labels)
    task: Task
    if dataset.task != "auto":
        task = dataset.task
    elif numbers is None:
        task = "classification"
    else:
        whole = all(v.is_integer() for v in numbers)
        task = (
            "classification" if whole and len(set(numbers)) <= _MAX_CLASSES_AUTO else "regression"
        )
    if task == "regression":
        if numbers is None:
            bad = next(label for label in labels if _finite_numbers([label]) is None)
            raise DatasetError(
                "dataset.target",
                f"regression needs finite numeric targets; row {labels.index(bad) + 2} has "
                "another value",
            )
        return torch.tensor(numbers, dtype=torch.float64).unsqueeze(1), task
    if numbers is not None:
        index = {v: i for i, v in enumerate(sorted(set(numbers)))}
        return torch.tensor([index[v] for v in numbers]), task
    names = {v: i for i, v in enumerate(sorted(set(labels)))}
    return torch.tensor([names[v] for v in labels]), task


def _finite_numbers(cells: list[str]) -> list[float] | None:
    """The cells as floats, or None if any is not a finite number."""
    numbers = []
    for cell in cells:
        try:
            value = float(cell)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        numbers.append(value)
    return numbers


def _from_factory(spec: TrainingSpec, dataset: FactoryDataset) -> Data:
    module_name, _, function_name = dataset.factory.partition(":")
    try:
        with stdout_to_stderr():  # what user code prints must not reach the stdio transport
            function = getattr(importlib.import_module(module_name), function_name)
            made = function(spec)
    except Exception as exc:  # user code: whatever it raises is a problem with the dataset
        raise DatasetError("dataset.factory", f"{dataset.factory} failed: {exc!r}") from exc
    if not (isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], nn.Module)):
        raise DatasetError(
            "dataset.factory",
            f"{dataset.factory} must return (model, train_dataset, val_dataset), "
            f"got {type(made).__name__}",
        )
    model, train, val = made
    for name, part in (("train_dataset", train), ("val_dataset", val)):
        if part is None and name == "val_dataset":
            continue
        if not isinstance(part, Sized) or not hasattr(part, "__getitem__") or len(part) == 0:
            raise DatasetError(
                "dataset.factory", f"{name} must be a non-empty map-style Dataset of (x, y)"
            )
    x, y = train[0]
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise DatasetError("dataset.factory", "datasets must yield (x, y) pairs of tensors")
    task: Task = "regression" if y.is_floating_point() else "classification"
    return Data(train, val, task, x.numel(), 0, model=model)
