"""The stop decision: stop only when the run has shown its trend, is no longer improving beyond
its own noise, and a learning-curve forecast says continuing is unlikely to buy anything.

Pure, and read-only on the engine's state. Every quantity is the curve's own: the noise is the
scatter of the latest `window` raw values around their neighbours (`Trend.noise`), the margin
worth continuing for is a share of the improvement the run has made so far, and "showing a
trend" means having moved beyond that noise, so nothing here counts a fixed number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.analysis.engine import Engine
from trainer.analysis.forecast import Forecast, forecast

__all__ = ["STOP_PROBABILITY", "StopCall", "stop_call"]

# Stop when continuing beats the best by more than the margin with a probability below this.
# Tuned on the tuning part of tests/trainer/fixtures/stop_curves.json only (bench/stop_decisions.py
# reports the held-out part): 0.3 saved 1% of the epochs for 0.04% more mean regret.
STOP_PROBABILITY = 0.2
# The margin: continuing is worth it when it likely beats the best by more than this share of
# the improvement so far (first value to best), the unit the bench measures regret in.
MARGIN_FRACTION = 0.01
# How many trend windows of the latest values the forecast of a stalled run is fitted to.
STALLED_WINDOWS = 2
# A move counts as a trend when it is larger than this many noise levels.
_TREND_NOISES = 3.0


@dataclass(frozen=True, slots=True)
class StopCall:
    """`shown`: the run has shown a trend (improved beyond its noise, or has sat clearly above
    its best for a whole window). `improving`: the smoothed curve still improves beyond its noise
    over the window. `forecast`: what continuing to `forecast.horizon` would buy (None until
    shown). `stop`: all three say stop. `margin` is in the monitor's units."""

    shown: bool
    improving: bool
    stop: bool
    margin: float
    improvement: float
    forecast: Forecast | None


def stop_call(engine: Engine) -> StopCall | None:
    """The decision at the engine's latest epoch; None before the monitor has a trend and a
    noise level (a window's worth of values)."""
    mon, sign, p = engine.mon, engine.sign, engine.params
    trend, best, first = mon.trend, mon.best, mon.first
    if trend is None or trend.noise is None or best is None or first is None:
        return None
    if trend.points < min(p.window, 5) or engine.last_epoch is None:
        return None
    noise = trend.noise
    improvement = sign * (first[1] - best[1])
    margin = max(p.min_delta, MARGIN_FRACTION * max(improvement, noise))
    # Still improving: the smoothed trend falls by more than the noise over the window, and the
    # window holds a new best (the debiased EMA still drifts for a while after a curve levels
    # off, which is lag, not improvement).
    improving = trend.direction(sign) == "improving" and best[0] >= trend.from_epoch
    # A run that never improved beyond its noise shows a trend only by staying clearly worse
    # than its best for a whole window (a dead or diverging run); a noisy flat start does not.
    worst_gap = min(sign * (value - best[1]) for _, value, _ in mon.window)
    shown = improvement > _TREND_NOISES * noise or (
        engine.last_epoch - best[0] >= p.window and worst_gap > _TREND_NOISES * noise
    )
    if not shown:
        return StopCall(False, improving, False, margin, improvement, None)
    last = engine.last_epoch
    # Without a budget, look as far ahead as the run has come.
    seen = last - (engine.first_epoch or 1) + 1
    horizon = max(last, p.epochs_total if p.epochs_total is not None else last + seen)
    points = [(epoch, sign * value) for epoch, value in engine.recent]
    if best[0] < trend.from_epoch:
        # No new best for a whole window: the run has left the regime the long fit describes
        # (its steep start pulls a power law towards more improvement than the plateau or the
        # rise since shows), so the forecast is fitted to the latest STALLED_WINDOWS windows.
        points = points[-STALLED_WINDOWS * p.window :]
    fc = forecast(points, noise, sign * best[1] - margin, horizon)
    stop = fc is not None and not improving and fc.probability < STOP_PROBABILITY
    return StopCall(True, improving, stop, margin, improvement, fc)
