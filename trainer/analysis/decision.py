"""The stop decision: stop only when the run has shown its trend, is no longer improving beyond
its own noise, and a learning-curve forecast says continuing is not worth its epochs.

Pure, and read-only on the engine's state. Every quantity is the curve's own: the noise is the
scatter of the latest `window` raw values around their neighbours (`Trend.noise`), what continuing
buys is measured in shares of the improvement the run has made so far (first value to best), its
cost in shares of the run's budget, and "showing a trend" means having moved beyond that noise or
having had a whole window to beat its best, so nothing here counts a fixed number of epochs from
the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.analysis.engine import Engine
from trainer.analysis.forecast import Forecast, forecast
from trainer.analysis.prior import stop_features, stop_risk

__all__ = ["GAIN_PRICE", "MARGIN_FRACTION", "STALLED_WINDOWS", "StopCall", "stop_call"]

# Continuing to a future epoch is worth it when the best is expected to improve by at least this
# many times the share of the budget those epochs cost, in shares of the improvement so far
# (1: spending a tenth of the budget must be expected to buy a tenth more improvement). Tuned on
# the tuning part of tests/trainer/fixtures/stop_curves.json only (0.5 and 2 were the
# neighbours: +2.9 / -1.4 points of epochs for -0.5 / +0.8 points of mean regret);
# bench/stop_decisions.py reports the held-out part, which no threshold here has seen.
GAIN_PRICE = 1.0
# The margin of the stated probability: continuing "beats the best" when it beats it by more
# than this share of the improvement so far (the unit the bench measures regret in).
MARGIN_FRACTION = 0.01
# A move counts as a trend when it is larger than this many noise levels.
_TREND_NOISES = 3.0
# How many trend windows of the latest values the forecast of a stalled run is fitted to.
STALLED_WINDOWS = 2


@dataclass(frozen=True, slots=True)
class StopCall:
    """`shown`: the run has shown a trend (improved beyond its noise, or has had a whole window
    to beat its best). `improving`: the smoothed curve still improves beyond its noise. `forecast`:
    what continuing to `forecast.horizon` would buy (None until shown). `value`: the most any
    future epoch is worth, expected gain share / budget share (stop below GAIN_PRICE), with
    `value_epoch` that epoch. `stop`: all say stop. `margin` is in the monitor's units."""

    shown: bool
    improving: bool
    stop: bool
    margin: float
    improvement: float
    forecast: Forecast | None
    value: float | None = None
    value_epoch: int | None = None
    # The stop prior's features and its risk: the probability that stopping now loses more than
    # 1 % of the improvement (`prior.stop_risk`); None until the run has shown a trend.
    features: tuple[float, ...] | None = None
    risk: float | None = None


def stop_call(engine: Engine) -> StopCall | None:
    """The decision at the engine's latest epoch; None before the monitor has a full trend
    window (its noise is measured over one)."""
    mon, sign, p = engine.mon, engine.sign, engine.params
    trend, best, first = mon.trend, mon.best, mon.first
    if trend is None or trend.noise is None or best is None or first is None:
        return None
    if trend.points < p.window or engine.last_epoch is None:
        return None
    noise, last = trend.noise, engine.last_epoch
    improvement = sign * (first[1] - best[1])
    margin = max(p.min_delta, MARGIN_FRACTION * max(improvement, noise))
    # Still improving: the smoothed trend of the window falls by more than the noise, the window
    # holds a new best, and the smoothed curve fell by more than the noise over the latest half
    # window (the window's trend still counts a fall that ended a few epochs ago).
    window = mon.window
    half = len(window) // 2
    improving = (
        trend.direction(sign) == "improving"
        and best[0] >= trend.from_epoch
        and sign * (window[-1 - half][2] - window[-1][2]) > noise
    )
    # Shown: the run has moved beyond its noise, down (improved) or up again from its best
    # (smoothed), or has had a whole window to beat its best.
    worsened = sign * (window[-1][2] - best[1])
    shown = (
        improvement > _TREND_NOISES * noise
        or worsened > _TREND_NOISES * noise
        or last - best[0] >= p.window
    )
    if not shown:
        return StopCall(False, improving, False, margin, improvement, None)
    # Without a budget, look as far ahead as the run has come.
    start = engine.first_epoch or 1
    seen = last - start + 1
    horizon = max(last, p.epochs_total if p.epochs_total is not None else last + seen)
    points = [(epoch, sign * value) for epoch, value in engine.recent]
    if best[0] < trend.from_epoch:
        # No new best for a whole window: the run has left the regime the long fit describes
        # (its steep start pulls a power law towards more improvement than the plateau or the
        # rise since shows), so the forecast is fitted to the latest STALLED_WINDOWS windows.
        points = points[-STALLED_WINDOWS * p.window :]
    # What continuing is worth is only needed (and only paid for) once the curve has stopped
    # improving beyond its noise: until then the run continues whatever the forecast says.
    worth_best = None if improving else sign * best[1]
    fc = forecast(points, noise, sign * best[1] - margin, horizon, best=worth_best)
    value = value_epoch = None
    budget = max(1, horizon - start + 1)
    # The fit ends at the monitor's last value, which may be older than the run's last epoch (an
    # epoch whose val_loss has not arrived yet): only epochs after `last` are still to be paid.
    ahead = [] if fc is None else [(epoch, gain) for epoch, gain in fc.gains if epoch > last]
    if ahead:
        scale = max(improvement, noise)
        value, value_epoch = max(
            (_worth(gain, scale) / ((epoch - last) / budget), epoch) for epoch, gain in ahead
        )
    if fc is None:
        return StopCall(True, improving, False, margin, improvement, None, value, value_epoch)
    features = stop_features(
        engine,
        improving=improving,
        improvement=improvement,
        budget_used=min(1.0, seen / budget),
        worth=None if improving else value if ahead else 0.0,
        probability=fc.probability,
    )
    risk = stop_risk(features)
    stop = not improving and (value is None or value < GAIN_PRICE)
    return StopCall(
        True, improving, stop, margin, improvement, fc, value, value_epoch, features, risk
    )


def _worth(gain: float, scale: float) -> float:
    """`gain` as a share of `scale` (a curve with neither improvement nor noise has only
    nothing or everything to gain)."""
    if scale > 0:
        return gain / scale
    return 0.0 if gain <= 0 else math.inf
