"""What a training run is: the dataset, the model, the optimisation and the stopping rules.

`TrainingSpec()` with no arguments is the demo run: a large MLP on `noisy_spirals`, whose
validation loss turns up after about ten epochs while the training loss keeps falling. Every model
is frozen and forbids unknown fields, so a spec can be stored, compared and sent to a GPU host as
JSON. Torch-free.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SYNTHETIC_DATASETS",
    "CsvDataset",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "FactoryDataset",
    "ModelSpec",
    "MonitorName",
    "ScheduleSpec",
    "SyntheticDataset",
    "TrainingSpec",
    "monitor_mode",
]

SyntheticName = Literal["blobs", "noisy_spirals", "sine"]
MonitorName = Literal["val_loss", "train_loss", "val_accuracy", "train_accuracy"]

# name -> one line a model (or a person) can choose from.
SYNTHETIC_DATASETS: dict[str, str] = {
    "blobs": "easy classification: 3 Gaussian clusters in 2-D (noise = cluster std, default 1.0); "
    "loss falls fast and accuracy nears 100%",
    "noisy_spirals": "overfitting demo: two interleaved 2-D spirals with 10% flipped labels and 6 "
    "irrelevant noise features (noise = coordinate std, default 0.05); a large MLP's val_loss "
    "turns up after ~8 epochs while train_loss keeps falling",
    "sine": "regression: y = sin(x) + Gaussian noise (noise = its std, default 0.1) for x in "
    "[-3, 3]; one target, no accuracy",
}

_FACTORY_FORM = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SyntheticDataset(_Frozen):
    """A built-in set generated from the seed (see `SYNTHETIC_DATASETS`); nothing is downloaded."""

    kind: Literal["synthetic"] = "synthetic"
    name: SyntheticName = "noisy_spirals"
    n_samples: int = Field(default=1000, ge=20, le=10_000_000, description="rows before the split")
    noise: float | None = Field(
        default=None, ge=0, le=100, description="None = the set's own default"
    )


class CsvDataset(_Frozen):
    """A CSV file with a header row. Features are standardised on the training split only.

    `path` must lie under one of the server's data roots. `features` None = every column but the
    target. `task` "auto": a non-numeric target, or an integer one with at most 20 distinct values,
    is classification; anything else is regression (targets are used as they are, unscaled).
    """

    kind: Literal["csv"] = "csv"
    path: str = Field(min_length=1)
    target: str = Field(min_length=1)
    features: tuple[str, ...] | None = None
    task: Literal["auto", "classification", "regression"] = "auto"

    @model_validator(mode="after")
    def _distinct_columns(self) -> Self:
        if self.features is not None:
            if not self.features:
                raise ValueError("features: give at least one column, or null for all but target")
            if len(set(self.features)) != len(self.features):
                raise ValueError(f"features: columns must be distinct, got {list(self.features)}")
            if self.target in self.features:
                raise ValueError(f"features: must not contain the target column {self.target!r}")
        return self


class FactoryDataset(_Frozen):
    """Your own code: `factory` names a function as "package.module:function".

    It is called as `function(spec: TrainingSpec)` and must return a tuple
    `(model, train_dataset, val_dataset)`: a `torch.nn.Module` and two map-style
    `torch.utils.data.Dataset`s of `(x, y)` tensor pairs (`val_dataset` may be None). An integer `y`
    (a class index) makes it classification with cross-entropy on the model's logits; a floating `y`
    makes it regression with mean squared error against the model's output of the same shape. The
    model and data are used as given (no standardisation, `spec.model` and `val_fraction` ignored).
    It runs arbitrary code, so the server refuses it unless started with `--allow-factory`.
    """

    kind: Literal["factory"] = "factory"
    factory: str = Field(min_length=3, max_length=300)

    @field_validator("factory")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not _FACTORY_FORM.match(value):
            raise ValueError(f"must look like 'package.module:function', got {value!r}")
        return value


DatasetSpec = Annotated[SyntheticDataset | CsvDataset | FactoryDataset, Field(discriminator="kind")]


class ModelSpec(_Frozen):
    """An MLP: Linear -> activation -> Dropout per hidden layer, then a Linear head."""

    hidden_sizes: tuple[Annotated[int, Field(ge=1, le=65_536)], ...] = Field(
        default=(256, 256, 256), max_length=64
    )
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)


class ScheduleSpec(_Frozen):
    """The learning-rate schedule, stepped once per epoch (PyTorch's schedulers).

    constant; step (x `gamma` every `step_size` epochs); cosine (to `min_lr` over all epochs);
    reduce_on_plateau (PyTorch semantics: x `factor` once val_loss, or train_loss without a
    validation split, has not improved by a relative `threshold` for more than `patience` epochs,
    then wait `cooldown` epochs; never below `min_lr`).
    """

    kind: Literal["constant", "step", "cosine", "reduce_on_plateau"] = "constant"
    step_size: int = Field(default=10, ge=1, le=100_000)
    gamma: float = Field(default=0.1, gt=0, le=1)
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=10, ge=0, le=100_000)
    threshold: float = Field(default=1e-4, ge=0, lt=1)
    cooldown: int = Field(default=0, ge=0, le=100_000)
    min_lr: float = Field(default=0.0, ge=0)


class EarlyStoppingSpec(_Frozen):
    """When to stop before `epochs`: checked after each epoch, in this order; the first wins.

    - `check_finite` (Lightning): a NaN/inf monitored value ends the run as failed.
    - `start_from_epoch` (Keras): the first N epochs are not watched at all (warm-up).
    - `divergence_threshold` (Lightning): stop once the monitor is worse than this value.
    - `patience`, `min_delta`, `baseline` (Keras): an epoch improves when it beats the best by more
      than `min_delta`; stop after `patience` epochs without improvement (None = off). With a
      `baseline`, the count resets only on epochs that also beat the baseline.
    - `gl_alpha` (Prechelt GL): stop when GL(t) = 100 * (E_va(t) / min E_va - 1) > alpha (percent).
    - `pq_alpha` (Prechelt PQ): at the end of each strip of `pq_strip_k` epochs (epochs divisible
      by k), stop when GL(t) / P_k(t) > alpha, P_k(t) = 1000 * (mean / min - 1) of the strip's
      train_loss (per mille).
    - `up_strips` (Prechelt UP_s): stop when the monitor rose at the ends of s successive strips of
      `pq_strip_k` epochs (E_va(t) > E_va(t - k)).

    `mode` "auto" maximises accuracies and minimises losses (Keras). Prechelt's criteria need a
    minimised monitor. `restore_best_weights` (Keras) gives the model the weights of the best epoch
    (by the rule above) when the run ends, whatever the outcome.
    """

    monitor: MonitorName = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = Field(default=0.0, ge=0)
    patience: int | None = Field(default=5, ge=0, le=100_000)
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = Field(default=0, ge=0, le=100_000)
    check_finite: bool = True
    divergence_threshold: float | None = None
    gl_alpha: float | None = Field(default=None, gt=0)
    pq_alpha: float | None = Field(default=None, gt=0)
    pq_strip_k: int = Field(default=5, ge=2, le=1000)
    up_strips: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _prechelt_needs_a_loss(self) -> Self:
        used = [n for n in ("gl_alpha", "pq_alpha", "up_strips") if getattr(self, n) is not None]
        if used and monitor_mode(self.monitor, self.mode) != "min":
            raise ValueError(
                f"{used[0]}: Prechelt's criteria need a monitor to minimise (a loss), "
                f"got monitor={self.monitor!r} with mode={self.mode!r}"
            )
        return self


def monitor_mode(monitor: str, mode: str) -> Literal["min", "max"]:
    """Resolve mode "auto" as Keras does: accuracies are maximised, losses minimised."""
    if mode == "min":
        return "min"
    if mode == "max" or "accuracy" in monitor:
        return "max"
    return "min"


class TrainingSpec(_Frozen):
    """A complete, validated description of one training run. `TrainingSpec()` is the demo run."""

    dataset: DatasetSpec = SyntheticDataset()
    model: ModelSpec = ModelSpec()
    epochs: int = Field(default=20, ge=1, le=100_000)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0, le=100)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(default=0.0, ge=0, le=10)
    schedule: ScheduleSpec = ScheduleSpec()
    grad_clip: float | None = Field(
        default=None, gt=0, description="max global grad norm; None = off"
    )
    val_fraction: float = Field(
        default=0.2, ge=0, le=0.9, description="ignored by factory datasets"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    log_every_n_steps: int = Field(
        default=10, ge=0, le=1_000_000, description="0 = no per-step losses"
    )
    torch_threads: int | None = Field(default=None, ge=1, le=1024)
    early_stopping: EarlyStoppingSpec | None = None

    @model_validator(mode="after")
    def _monitor_is_measured(self) -> Self:
        stopping = self.early_stopping
        if stopping is None:
            return self
        dataset = self.dataset
        if (
            stopping.monitor.startswith("val_")
            and self.val_fraction == 0
            and not isinstance(dataset, FactoryDataset)
        ):
            raise ValueError(
                f"early_stopping.monitor: {stopping.monitor!r} needs a validation split, "
                "but val_fraction is 0; monitor 'train_loss' or set val_fraction in (0, 0.9]"
            )
        regression = (isinstance(dataset, SyntheticDataset) and dataset.name == "sine") or (
            isinstance(dataset, CsvDataset) and dataset.task == "regression"
        )
        if regression and stopping.monitor.endswith("accuracy"):
            raise ValueError(
                f"early_stopping.monitor: {stopping.monitor!r} is not measured on a regression "
                "task; use 'val_loss' or 'train_loss'"
            )
        return self
