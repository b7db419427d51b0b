"""The stop prior: how likely stopping now loses more than 1 % of the run's improvement.

A logistic model of a few scale-free features of the engine's state at the latest epoch, fitted
offline by `bench/fit_stop_prior.py` to the tuning curves of `tests/trainer/fixtures/
stop_curves.json` (real trainings; the held-out batch was trained after these constants were
frozen). Its target at each epoch is whether stopping there and restoring the best so far loses
more than RIGHT_WITHIN of the improvement from the first value to the hindsight best, so
`stop_risk` reads as that probability, and the analysis' `confidence` of a stop is 1 - risk, of a
continue the risk. It is not part of the stop rule: cross-validated on the tuning curves, no
threshold on it (alone or with the forecast's worth) beat the worth rule of `decision.py`
(bench/fit_stop_prior.py prints both). Pure Python: a dot product and a sigmoid per analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainer.analysis.engine import Engine

__all__ = ["FEATURES", "RIGHT_WITHIN", "stop_features", "stop_risk"]

# Stopping is "right" when it loses at most this share of the improvement (the bench's unit).
RIGHT_WITHIN = 0.01
# The names of `stop_features`' values, in order (the fit script prints its weights by name).
FEATURES = (
    "budget_used",
    "windows_since_best",
    "log_improvement_over_noise",
    "best_moved_last_window",
    "best_moved_last_2_windows",
    "smoothed_above_best",
    "window_trend_over_noise",
    "improving",
    "log10_worth",
    "forecast_probability",
    "train_change",
    "overfitting",
)
# Printed by bench/fit_stop_prior.py, fitted to the 219 tuning curves of the fixture (seeds 2026
# and 2027 of bench/make_stop_fixture.py; 15,289 epochs with a shown trend); refit, do not edit.
# Read in FEATURES' order: a stop is safer the later in the budget and the longer since the best
# (and while the training loss falls: the overfitting regime); riskier when the best moved in the
# latest window, when the forecast expects to beat it and while the curve still improves.
_WEIGHTS: tuple[float, ...] = (
    -3.064,
    -0.8073,
    0.0695,
    0.7568,
    -0.4132,
    0.3084,
    -0.05901,
    0.9608,
    -0.0795,
    2.767,
    1.489,
    -0.07376,
)
_INTERCEPT = -0.3919


def _clip(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def stop_features(
    engine: Engine,
    *,
    improving: bool,
    improvement: float,
    budget_used: float,
    worth: float | None,
    probability: float,
) -> tuple[float, ...]:
    """The features at the engine's latest epoch (see FEATURES); all bounded and scale-free:
    values are divided by the improvement so far (or the noise when that is larger)."""
    mon, sign, window = engine.mon, engine.sign, engine.params.window
    trend, best, last = mon.trend, mon.best, engine.last_epoch
    assert trend is not None and trend.noise is not None and best is not None
    assert last is not None
    noise = trend.noise
    scale = max(improvement, noise, 1e-300)
    bests = engine.bests
    first = mon.first[1] if mon.first is not None else best[1]

    def moved(back: int) -> float:
        then = bests[-1 - back] if len(bests) > back else first
        return _clip(sign * (then - best[1]) / scale, 0.0, 1.0)

    smoothed = mon.window[-1][2]
    # The training counterpart's move over its window (none when the monitor is itself the
    # training metric).
    series = engine.train
    train = series.trend if series is not None and series is not mon else None
    train_change = (train.relative_change_pct or 0.0) / 100.0 if train is not None else 0.0
    return (
        budget_used,
        _clip((last - best[0]) / window, 0.0, 3.0),
        _clip(math.log1p(improvement / max(noise, 1e-300)), 0.0, 12.0),
        moved(window),
        moved(2 * window),
        _clip(sign * (smoothed - best[1]) / scale, -1.0, 3.0),
        _clip(sign * trend.change / max(noise, 1e-300), -10.0, 10.0),
        1.0 if improving else 0.0,
        3.0 if worth is None else _clip(math.log10(max(worth, 1e-300)), -3.0, 3.0),
        probability,
        _clip(train_change, -1.0, 1.0),
        1.0 if "overfitting" in engine.since else 0.0,
    )


def stop_risk(features: Sequence[float]) -> float:
    """The probability that stopping now loses more than RIGHT_WITHIN of the improvement."""
    z = _INTERCEPT + math.fsum(w * x for w, x in zip(_WEIGHTS, features, strict=True))
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
