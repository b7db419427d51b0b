"""The resource budget: what a spec will cost, estimated before it runs, against the host's limits.

Pure and torch-free: the server checks it in the request that carries a spec, the bridge in the
one that starts a session, and the loop again before the first epoch. Estimates are upper-bound
sketches of an MLP run (float32 tensors), not measurements:

- `parameters`: weights and biases of every layer, the head included;
- `activation_bytes`: one batch's forward activations kept for backward, and their gradients;
- `dataset_rows`: `n_samples` of a synthetic set, or a CSV's rows (its size over its first row's);
- `checkpoint_bytes`: `best.pt` and `last.pt`, each the weights and the optimizer's state.

`ResourceLimits.for_memory()` derives the defaults from the machine's memory; the operator
overrides any of them. A spec over a limit raises `SpecError` naming the field that drives the
estimate, the estimate and the limit. Factory datasets (the operator's own code) are not estimated.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import SpecError
from trainer.spec import CsvDataset, SyntheticDataset, TrainingSpec

__all__ = [
    "ResourceEstimate",
    "ResourceLimits",
    "check_budget",
    "estimate_resources",
    "format_bytes",
    "machine_memory_bytes",
]

_FLOAT = 4  # bytes per float32 value
# (features, outputs) of the built-in sets
_SYNTHETIC_SHAPES = {"blobs": (2, 3), "noisy_spirals": (8, 2), "sine": (1, 1)}
# Optimizer state per parameter, in parameter-sized tensors (Adam: two moments; SGD: momentum).
_OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1}
_CSV_CLASSES_GUESS = 20  # a CSV target's classes are unknown until loaded: the auto-task maximum
_ROW_BYTES_IN_MEMORY = 256  # a synthetic row generated in float64, split and copied (measured)


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when that is smaller (a container)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(total)


def format_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """What one run may cost here. Memory limits are bytes; `None` turns a limit off."""

    max_parameters: int | None
    max_activation_bytes: int | None
    max_dataset_rows: int | None
    max_checkpoint_bytes: int | None  # per run: best.pt and last.pt together

    @classmethod
    def for_memory(cls, memory_bytes: int | None = None) -> ResourceLimits:
        """Defaults: a run's parameters (with gradients and optimizer state), one batch's
        activations and its data may each take an eighth of the memory; checkpoints a quarter."""
        memory = memory_bytes or machine_memory_bytes()
        share = memory // 8
        return cls(
            max_parameters=share // (_FLOAT * 4),
            max_activation_bytes=share,
            max_dataset_rows=share // _ROW_BYTES_IN_MEMORY,
            max_checkpoint_bytes=memory // 4,
        )


@dataclass(frozen=True, slots=True)
class ResourceEstimate:
    parameters: int
    activation_bytes: int
    dataset_rows: int | None  # None: unknown
    checkpoint_bytes: int
    rows_field: str = "dataset.n_samples"  # what sets the rows: n_samples, or the CSV file


def estimate_resources(
    spec: TrainingSpec, *, csv_columns: int | None = None, csv_rows: int | None = None
) -> ResourceEstimate | None:
    """The estimate for `spec`; None for a factory dataset. A CSV's column and row counts come
    from the pre-flight (`csv_columns`: header width, `csv_rows`: estimated rows)."""
    dataset = spec.dataset
    rows: int | None
    if isinstance(dataset, SyntheticDataset):
        features, outputs = _SYNTHETIC_SHAPES[dataset.name]
        rows = dataset.n_samples
    elif isinstance(dataset, CsvDataset):
        width = csv_columns or 2
        features = len(dataset.features) if dataset.features else max(1, width - 1)
        outputs = 1 if dataset.task == "regression" else _CSV_CLASSES_GUESS
        rows = csv_rows
    else:
        return None
    widths = [features, *spec.model.hidden_sizes, outputs]
    parameters = sum(a * b + b for a, b in itertools.pairwise(widths))
    hidden = sum(spec.model.hidden_sizes)
    # per sample: input, each hidden layer's linear output, activation and dropout mask, the
    # logits; doubled for their gradients in backward
    per_sample = features + 3 * hidden + 2 * outputs
    batch = min(spec.batch_size, rows) if rows else spec.batch_size
    activation = 2 * batch * per_sample * _FLOAT
    state = 1 + _OPTIMIZER_STATE[spec.optimizer]
    checkpoint = 2 * parameters * _FLOAT * state
    rows_field = "dataset.path" if isinstance(dataset, CsvDataset) else "dataset.n_samples"
    return ResourceEstimate(parameters, activation, rows, checkpoint, rows_field)


def check_budget(estimate: ResourceEstimate | None, limits: ResourceLimits | None) -> None:
    """Raise `SpecError` for the first estimate over its limit, naming the field behind it."""
    if estimate is None or limits is None:
        return
    count = "{:,}".format
    checks = [
        ("model.hidden_sizes", "parameters", estimate.parameters, limits.max_parameters, count,
         "--max-parameters"),
        ("batch_size", "activation memory per batch", estimate.activation_bytes,
         limits.max_activation_bytes, format_bytes, "--max-batch-memory"),
        (estimate.rows_field, "dataset rows", estimate.dataset_rows, limits.max_dataset_rows,
         count, "--max-dataset-rows"),
        ("model.hidden_sizes", "checkpoints (best.pt and last.pt)", estimate.checkpoint_bytes,
         limits.max_checkpoint_bytes, format_bytes, "--max-checkpoint-bytes"),
    ]  # fmt: skip
    for field, what, value, limit, show, flag in checks:
        if value is not None and limit is not None and value > limit:
            raise SpecError(
                field,
                f"{what} estimated at {show(value)}, over this host's limit of {show(limit)} "
                f"(the operator sets it with {flag}); make the run smaller",
            )
