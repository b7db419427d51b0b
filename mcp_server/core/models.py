"""The shared contract: these models are the MCP tools' structured output, the REST JSON and the
OpenAPI schema. Built once here, never re-shaped by hand at an edge."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from host_bridge.protocol import PUSH_TOKEN_HEADER
from storage import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    JsonBoundsError,
    Operation,
    OperationStatus,
    SeriesData,
    SeriesLatest,
    check_json_bounds,
    check_tags,
)
from trainer.analysis import ForecastSummary, LossAnalysis, LossFlag, RunSummary

__all__ = [
    "DEFAULT_METRICS",
    "AnalysisDigest",
    "ComparedRun",
    "Comparison",
    "Indicators",
    "OperationInfo",
    "OperationList",
    "OperationMetrics",
    "ResourceLinks",
    "RunResources",
    "SpecDifference",
    "StartTrainingArgs",
    "StartTrainingResult",
    "WaitResult",
    "Woke",
    "merge_flat",
]

# What get_operation_metrics returns when no names are given: compact, enough to judge a run.
DEFAULT_METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate")


class RunResources(BaseModel):
    """What one Ray run reserves on its node; Ray places it where these are free."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float | None = Field(default=None, ge=0, le=1024, description="CPUs (default 1)")
    num_gpus: float | None = Field(
        default=None, ge=0, le=64, description="GPUs (default 1 for device 'cuda', else 0)"
    )
    memory_mb: int | None = Field(
        default=None, ge=1, le=16_777_216, description="RAM to reserve, MiB"
    )


class StartTrainingArgs(BaseModel):
    """Flat, defaulted arguments for a run: every one optional, so `{}` starts the default demo."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="A label for the run")
    dataset: str | None = Field(
        None,
        description="Built-in set 'blobs' (easy classification), 'noisy_spirals' (small, noisy: "
        "big models overfit), 'sine' (regression); or 'csv' (with csv_path and target_column) "
        "or 'factory' (with factory)",
    )
    csv_path: str | None = Field(
        None, max_length=4096, description="CSV file under the server's data roots"
    )
    target_column: str | None = Field(None, description="CSV column to predict")
    feature_columns: list[str] | None = Field(None, description="CSV feature columns (default all)")
    task: Literal["auto", "classification", "regression"] | None = None
    factory: str | None = Field(
        None,
        description="'package.module:function' returning model and datasets (server must "
        "allow factories)",
    )
    hidden_sizes: list[int] | None = Field(
        None, description="MLP hidden layer widths, e.g. [64, 64]"
    )
    activation: Literal["relu", "gelu", "tanh", "silu"] | None = None
    dropout: float | None = Field(None, description="Dropout probability, 0 <= p < 1")
    epochs: int | None = Field(None, ge=1, le=100_000, description="Number of epochs, 1..100000")
    batch_size: int | None = None
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    learning_rate: float | None = None
    momentum: float | None = Field(None, description="SGD momentum")
    weight_decay: float | None = None
    schedule: Literal["constant", "step", "cosine", "reduce_on_plateau"] | None = None
    grad_clip: float | None = Field(None, description="Clip the global gradient norm to this")
    val_fraction: float | None = Field(None, description="Share of data held out for validation")
    seed: int | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] | None = Field(
        None, description="'cuda' sends the run to a GPU host bridge when one is configured"
    )
    log_every_n_steps: int | None = Field(None, description="Per-step loss every N batches; 0 off")
    early_stopping: bool | None = Field(None, description="Stop when val_loss stops improving")
    patience: int | None = Field(None, description="Early-stopping patience in epochs")
    tags: dict[str, str] | None = Field(
        None,
        description=f"Labels: <= {MAX_TAGS}, keys <= {MAX_TAG_KEY} and values <= "
        f"{MAX_TAG_VALUE} characters",
    )
    backend: Literal["auto", "local", "bridge", "external", "ray"] = Field(
        "auto",
        description="auto: a device='cuda' run goes to Ray (with --ray) or a bridge, else "
        "local; external: register a run trained elsewhere that pushes its own metrics",
    )
    entry_point: str | None = Field(
        None,
        description="A script from list_entry_points (then only name, tags, params, resources)",
    )
    params: dict[str, Any] | None = Field(None, description="The script's parameters")
    resources: RunResources | None = Field(
        None, description="What a Ray run reserves on the cluster (backend 'ray' only)"
    )
    spec: dict[str, Any] | None = Field(
        None,
        description="A full TrainingSpec, overridden by the flat arguments (external runs: any "
        f"object, <= {MAX_JSON_DEPTH} deep and {MAX_JSON_BYTES} bytes)",
    )

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: dict[str, str] | None) -> dict[str, str] | None:
        if tags is not None:
            try:
                check_tags(tags)
            except JsonBoundsError as exc:
                raise ValueError(str(exc)) from None
        return tags

    @field_validator("spec")
    @classmethod
    def _bounded_spec(cls, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        if spec is not None:
            try:
                check_json_bounds(spec)
            except JsonBoundsError as exc:
                raise ValueError(str(exc)) from None
        return spec

    @field_validator("csv_path")
    @classmethod
    def _no_nul(cls, path: str | None) -> str | None:
        if path is not None and "\x00" in path:
            raise ValueError("a path must not contain a NUL byte")
        return path


class ResourceLinks(BaseModel):
    operation: str
    metrics: str
    analysis: str


class StartTrainingResult(BaseModel):
    operation_id: str
    name: str
    status: OperationStatus
    backend: str
    epochs_total: int | None
    resources: ResourceLinks = Field(description="MCP resources to read or subscribe to")
    next_step: str = Field(description="What to call next")
    push_token: str | None = Field(
        default=None,
        description=f"External runs only, shown once: send it as the {PUSH_TOKEN_HEADER} header "
        "with every push, status report and heartbeat; others are refused",
    )


class OperationInfo(Operation):
    """An operation with the latest value of each of its metrics and its resource URIs."""

    latest: list[SeriesLatest] = Field(default_factory=list)
    resources: ResourceLinks


class OperationList(BaseModel):
    operations: list[Operation]
    returned: int
    status_filter: OperationStatus | None = None
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor for the next (older) page; null at the oldest"
    )


class Indicators(BaseModel):
    """Trend indicators from the default analysis (call analyze_loss for the full picture)."""

    monitor: str
    best_epoch: int | None
    best_value: float | None
    epochs_since_improvement: int | None
    overfitting: bool
    plateau: bool
    diverging: bool
    verdict: str
    recommendation: str


class OperationMetrics(BaseModel):
    operation_id: str
    status: OperationStatus
    epochs_done: int
    epochs_total: int | None
    series: list[SeriesData]
    missing: list[str] = Field(default_factory=list, description="Asked for but never stored")
    available: list[str] = Field(
        description="Every metric name this run has stored; 'system/' stands for its system "
        "series (CPU, memory, GPU)"
    )
    next_cursor: str = Field(description="Pass as `cursor` to get only what is new")
    has_more: bool = Field(
        False, description="A page_size read stopped before the end: call again with next_cursor"
    )
    indicators: Indicators | None = None


Woke = Literal["epoch", "decision", "end", "timeout"]


class WaitResult(BaseModel):
    """A digest of the run when the wait ended; the history only when asked for."""

    operation_id: str
    reached: bool = Field(description="False when the timeout came first")
    woke: Woke = Field(description="What ended the wait")
    waited_s: float
    status: OperationStatus
    epochs_done: int
    epochs_total: int | None
    latest: dict[str, float | None] = Field(description="Latest value of each default metric")
    indicators: Indicators | None = None
    changes: list[str] = Field(description="What changed while waiting that bears on a decision")
    next_cursor: str = Field(description="For get_operation_metrics: only what came after this")
    metrics: OperationMetrics | None = Field(
        default=None, description="With include_history: every point new since the call began"
    )


class SpecDifference(BaseModel):
    path: str = Field(description="Dotted path in the spec, e.g. model.hidden_sizes")
    values: dict[str, Any] = Field(description="operation_id -> value (null where absent)")


class ComparedRun(BaseModel):
    operation_id: str
    name: str
    status: OperationStatus
    summary: RunSummary


class Comparison(BaseModel):
    runs: list[ComparedRun]
    differences: list[SpecDifference] = Field(description="Spec fields that differ")
    identical_fields: int
    best_operation_id: str | None = Field(description="Lowest best val_loss (else train_loss)")


class AnalysisDigest(BaseModel):
    """analyze_loss's default answer: the decision and the numbers behind it. Its fields are a
    subset of `LossAnalysis`'s (plus `fired`), so the full report fits the same schema."""

    monitor: str
    epochs_analyzed: int
    last_epoch: int | None
    best_epoch: int | None
    best_value: float | None
    current_value: float | None
    epochs_since_improvement: int | None
    flags: list[LossFlag]
    verdict: str
    recommendation: str
    confidence: float
    reasons: list[str]
    forecast: ForecastSummary | None = None
    fired: dict[str, int] = Field(
        default_factory=dict, description="Stopping criteria that fired -> the epoch they fired"
    )

    @classmethod
    def of(cls, analysis: LossAnalysis) -> AnalysisDigest:
        criteria = analysis.criteria
        fired = {
            name: c.epoch
            for name, c in (
                ("gl", criteria.gl),
                ("pq", criteria.pq),
                ("up", criteria.up),
                ("patience", criteria.patience),
            )
            if c.fired and c.epoch is not None
        }
        fields = analysis.model_dump(include=set(cls.model_fields) - {"fired"})
        return cls(**fields, fired=fired)


def merge_flat(data: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Flat training arguments (start_training's, a fork's changes) onto a spec's dict: the
    model's fields, the schedule's kind, early stopping and its patience go where they belong,
    the rest are top-level fields. Takes them out of `flat`; returns `data`."""
    model = {k: flat.pop(k) for k in ("hidden_sizes", "activation", "dropout") if k in flat}
    if model:
        data["model"] = {**dict(data.get("model") or {}), **model}
    if "schedule" in flat:
        data["schedule"] = {**dict(data.get("schedule") or {}), "kind": flat.pop("schedule")}
    early, patience = flat.pop("early_stopping", None), flat.pop("patience", None)
    if early is False:
        data["early_stopping"] = None
    elif early or patience is not None:
        stopping = dict(data.get("early_stopping") or {})
        if patience is not None:
            stopping["patience"] = patience
        data["early_stopping"] = stopping
    data.update(flat)
    return data
