"""The loss analysis contract: its parameters and its result models.

These pydantic models are the one shape of an analysis everywhere: MCP structured output, the REST
mirror, resources. Output models refuse NaN and infinity so they always serialise to plain JSON;
a value that is not finite is None and the result says why. Import them from `trainer.analysis`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.config import JsonDict

__all__ = [
    "AnalysisParams",
    "FlagName",
    "ForecastSummary",
    "GeneralizationGap",
    "LossAnalysis",
    "LossFlag",
    "Mode",
    "Recommendation",
    "RunSummary",
    "StoppingCriteria",
    "StoppingCriterion",
    "TrendSummary",
    "Verdict",
    "output_float",
]

Verdict = Literal["too_early", "improving", "converged", "plateaued", "overfitting", "diverging"]
Recommendation = Literal[
    "continue",
    "stop_and_restore_best",
    "reduce_learning_rate",
    "add_regularization",
    "investigate_divergence",
    "wait_for_more_epochs",
]
FlagName = Literal[
    "overfitting", "plateau", "divergence", "oscillation", "non_finite", "input_bound", "near_oom"
]
Mode = Literal["min", "max"]


def output_float(value: float | None) -> float | None:
    """A float for an output model: None unless finite, rounded to 6 significant digits."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


# field -> (low, high, low inclusive, integer): the allowed range, checked with a message that
# names the field and the range. Also published as JSON-schema bounds for tool callers.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "min_delta": (0.0, 1e12, True, False),
    "patience": (1, 10_000, True, True),
    "window": (3, 500, True, True),
    "gl_alpha": (0.0, 1000.0, False, False),
    "pq_alpha": (0.0, 1000.0, False, False),
    "pq_strip_k": (2, 100, True, True),
    "up_strips": (1, 100, True, True),
    "divergence_factor": (1.0, 1000.0, False, False),
    "ema_weight": (0.0, 0.999, True, False),
}


def _bounds(name: str) -> JsonDict:
    low, high, inclusive, _ = _RANGES[name]
    return {"minimum" if inclusive else "exclusiveMinimum": low, "maximum": high}


class AnalysisParams(BaseModel):
    """How to judge a run. Every field has a default taken from a published anchor.

    - `monitor="val_loss"`, `mode="auto"`: Keras' defaults. `auto` maximises a metric whose name
      contains "acc" and minimises anything else. A run without any validation value is judged on
      its training counterpart (`val_accuracy` -> `train_accuracy`, else `train_loss`); the result
      says so in `notes`.
    - `min_delta=0`: Keras, Lightning and Hugging Face default. An absolute threshold depends on
      the scale of the loss; plateaus are found scale-free through patience, PQ and the trend.
    - `patience=10`: Keras and PyTorch ReduceLROnPlateau, and ktrdr's plateau rule. Counted in
      epochs since the best epoch (Keras' early-stopping default of 0 stops at the first bad epoch).
    - `window=10`: the trend window of ktrdr's overfitting rule and of Lightning's SpikeDetection.
      The trend costs O(window^2) per epoch, hence the upper bound.
    - `gl_alpha=5.0`: Prechelt studied GL_1 to GL_5; 5% is the top of that range and the 5%
      degradation threshold of ktrdr and W&B's diagnose. Because GL feeds a flag an agent acts on,
      we prefer the least trigger-happy of the studied values. The overfitting flag also wants the
      excess above twice the noise and above `gl_alpha` percent of the run's starting level (the
      first monitored or training value): 0.0002 -> 0.002 is GL 900% on a solved problem, and
      not overfitting worth acting on. `criteria.gl` stays exactly Prechelt's.
    - `pq_alpha=0.75`, `pq_strip_k=5`: Prechelt's strip length and the PQ threshold that
      EarlyStopping.jl ships as its default.
    - `up_strips=3`: UP_3 = validation worse at three successive strip ends (15 epochs with k=5),
      slower than GL_5 so it confirms rather than races it, and robust to a single noisy strip.
    - `divergence_factor=2.0`: a loss more than twice its best (Lightning SpikeDetection's
      rtol=2). ktrdr's +20% over 5 epochs confuses ordinary oscillation with divergence. Like
      every relative test behind the flags, the rise is measured against at least a quarter of
      the run's first value, so a loss near zero (a solved problem) does not trip it on noise.
      A validation loss diverges only when it doubles within the window while training stalls;
      a slow climb with improving training is overfitting.
    - `ema_weight=0.6`: TensorBoard's default smoothing, with its debiasing.
    - `epochs_total=None`: the run's budget, the horizon of the forecast ("continuing to epoch
      N"). The server fills in the operation's own `epochs_total`; without one, the forecast looks
      as many epochs ahead as the run has had so far.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitor: str = Field(default="val_loss", description="Metric to judge, e.g. val_loss.")
    mode: Literal["auto", "min", "max"] = Field(
        default="auto", description="min, max, or auto (max when the name contains 'acc')."
    )
    min_delta: float = Field(
        default=0.0,
        description="An improvement beats the best by more than this (absolute).",
        json_schema_extra=_bounds("min_delta"),
    )
    patience: int = Field(
        default=10,
        description="Epochs without improvement before the run counts as stalled.",
        json_schema_extra=_bounds("patience"),
    )
    window: int = Field(
        default=10,
        description="Recent values the trend, noise and gap are measured over.",
        json_schema_extra=_bounds("window"),
    )
    gl_alpha: float = Field(
        default=5.0,
        description="Prechelt GL threshold: percent above the best value.",
        json_schema_extra=_bounds("gl_alpha"),
    )
    pq_alpha: float = Field(
        default=0.75,
        description="Prechelt PQ threshold: GL divided by training progress (per mille).",
        json_schema_extra=_bounds("pq_alpha"),
    )
    pq_strip_k: int = Field(
        default=5,
        description="Prechelt strip length k in epochs.",
        json_schema_extra=_bounds("pq_strip_k"),
    )
    up_strips: int = Field(
        default=3,
        description="Prechelt UP_s: successive strips with a worse monitored value.",
        json_schema_extra=_bounds("up_strips"),
    )
    divergence_factor: float = Field(
        default=2.0,
        description="Diverging: a loss above its best by more than (factor - 1) x the best.",
        json_schema_extra=_bounds("divergence_factor"),
    )
    ema_weight: float = Field(
        default=0.6,
        description="Weight of the debiased EMA that smooths the series.",
        json_schema_extra=_bounds("ema_weight"),
    )

    epochs_total: int | None = Field(
        default=None,
        description="How far the forecast looks; default the run's own epochs_total.",
        json_schema_extra={"minimum": 1, "maximum": 1_000_000},
    )

    @field_validator("epochs_total")
    @classmethod
    def _check_epochs_total(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 1_000_000:
            raise ValueError(f"epochs_total must be an integer in [1, 1000000], got {value!r}")
        return value

    @field_validator("monitor")
    @classmethod
    def _check_monitor(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("monitor must be a non-empty metric name such as 'val_loss'")
        return value

    @field_validator(*_RANGES)
    @classmethod
    def _check_range(cls, value: float, info: ValidationInfo) -> float:
        name = info.field_name or "?"
        low, high, inclusive, integer = _RANGES[name]
        above = value >= low if inclusive else value > low
        if not (math.isfinite(value) and above and value <= high):
            kind = "an integer" if integer else "a number"
            if integer:
                span = f"in [{low:g}, {high:g}]"
            else:
                span = f"in {'[' if inclusive else '('}{low:g}, {high:g}]"
            raise ValueError(f"{name} must be {kind} {span}, got {value!r}")
        return value


_OUT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TrendSummary(BaseModel):
    """Trend of one metric over its last `window` values (finite ones only).

    `slope_per_epoch` is the Theil-Sen slope of the debiased-EMA-smoothed series against epoch
    number; `relative_change_pct` is the change of the smoothed series from `from_epoch` to
    `to_epoch` in percent of its value at `from_epoch`; `noise` is a robust standard deviation of
    the raw values' scatter (each value's deviation from the line through its neighbours, so a
    curving trend is not noise) and `noise_pct` is it in percent of the level (the median raw
    value). `direction` is `flat` when the fitted line moves less than the noise over the window.
    None marks a value that could not be computed (too few points, or a zero level to divide by).
    """

    model_config = _OUT

    metric: str
    from_epoch: int
    to_epoch: int
    points: int
    slope_per_epoch: float | None
    relative_change_pct: float | None
    noise: float | None
    noise_pct: float | None
    direction: Literal["improving", "worsening", "flat"]


class GeneralizationGap(BaseModel):
    """`val_metric - train_metric` at the last epoch with both, and its Theil-Sen trend.

    `widening` is true when the gap moved towards "validation worse" by more than `gl_alpha`
    percent of the best monitored value and more than twice its noise over the window.
    """

    model_config = _OUT

    val_metric: str
    train_metric: str
    value: float | None
    epoch: int | None
    slope_per_epoch: float | None
    change_over_window: float | None
    widening: bool


class LossFlag(BaseModel):
    """A condition that holds now, since `since_epoch` (non_finite: since the first occurrence)."""

    model_config = _OUT

    name: FlagName
    since_epoch: int
    evidence: str


class StoppingCriterion(BaseModel):
    """A stopping rule replayed over the run: `fired` and `epoch` say whether and when it would
    first have stopped the run; `value` is its latest value, measured at `value_epoch` (None when
    not finite or not measurable; the evidence of the flags says why)."""

    model_config = _OUT

    fired: bool
    epoch: int | None
    value: float | None
    value_epoch: int | None
    threshold: float


class StoppingCriteria(BaseModel):
    """Prechelt's GL (percent), PQ (GL over per-mille training progress), UP (successive worse
    strips) and Keras patience (epochs since the best epoch)."""

    model_config = _OUT

    gl: StoppingCriterion
    pq: StoppingCriterion
    up: StoppingCriterion
    patience: StoppingCriterion


class ForecastSummary(BaseModel):
    """What continuing would buy, from a learning curve fitted to the latest monitored values
    (exponential and power-law families averaged by their fit, with their uncertainty).

    `probability`: that some epoch from now to `horizon` beats `best_value` by more than
    `margin` (the larger of `min_delta` and 1% of the improvement so far, first value to best).
    `expected_final` +- `final_sd`: the fitted value at `horizon`. `noise`: the scatter of one
    value the forecast assumes. The reasons add the expected improvement of the best by
    `horizon`; `stop_and_restore_best` comes only when the smoothed curve no longer improves
    beyond its noise and no future epoch's expected gain (share of the improvement so far) is
    worth the share of the budget it costs.
    """

    model_config = _OUT

    horizon: int
    epochs_left: int
    probability: float = Field(ge=0.0, le=1.0)
    margin: float | None
    expected_final: float | None
    final_sd: float | None
    model: Literal["exponential", "power law"]
    noise: float | None


class LossAnalysis(BaseModel):
    """The judgement of a run's metric history, with the numbers behind it.

    Epoch fields hold real epoch numbers from the input. `best_epoch`/`best_value` follow Keras:
    a value counts as an improvement only when it beats the best by more than `min_delta`.
    `flags` hold now; `criteria` say when each stopping rule would have fired; `forecast` says
    what continuing to the budget would buy (None until the run has shown a trend). `verdict` and
    `recommendation` come with a `confidence` in [0, 1] and 1-3 `reasons` that quote numbers (then
    one per system flag, `input_bound` or `near_oom`, from the run's `system/...` series).
    `notes` record anything unusual about the input (a fallback monitor, non-finite values).
    """

    model_config = _OUT

    monitor: str
    mode: Mode
    train_metric: str | None
    epochs_analyzed: int
    first_epoch: int | None
    last_epoch: int | None
    best_epoch: int | None
    best_value: float | None
    current_value: float | None
    current_epoch: int | None
    epochs_since_improvement: int | None
    trend: TrendSummary | None
    train_trend: TrendSummary | None
    generalization_gap: GeneralizationGap | None
    flags: list[LossFlag]
    criteria: StoppingCriteria
    forecast: ForecastSummary | None
    verdict: Verdict
    recommendation: Recommendation
    confidence: float = Field(ge=0.0, le=1.0)
    reasons: list[str]
    notes: list[str]
    params: AnalysisParams
    next_call: dict[str, Any] | None = Field(
        default=None,
        description="The tool call that acts on the recommendation, with values, as "
        '{"tool": "fork_training", "arguments": {...}}; set by the server for runs it can fork',
    )


class RunSummary(BaseModel):
    """A run in one line, for comparing runs: best loss and its epoch, final values, timing.

    `best_metric` is `val_loss` when the run has any finite one, else `train_loss`.
    `final_values` holds each metric's value at the last epoch that reported it (None if not
    finite there).
    """

    model_config = _OUT

    epochs: int
    first_epoch: int | None
    last_epoch: int | None
    best_metric: str | None
    best_value: float | None
    best_epoch: int | None
    final_values: dict[str, float | None]
    mean_epoch_duration_s: float | None
    total_duration_s: float | None
