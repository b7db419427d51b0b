"""The running state behind `trainer.analysis`: one pass over the epochs, windowed work only.

`Engine.step` takes one epoch at a time, in increasing order, and updates per-metric state
(debiased EMA, true and Keras bests, a window of recent values and its Theil-Sen trend), Prechelt's
GL/PQ/UP and patience, and the current episode of each flag. Each judgement at epoch t uses only
epochs up to t, so "since epoch t" is what a live watcher would have seen.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Literal

from trainer.analysis.models import AnalysisParams, Mode
from trainer.criteria import Prechelt

__all__ = [
    "FIT_POINTS",
    "MIN_POINTS",
    "Criterion",
    "Divergence",
    "Engine",
    "Plan",
    "Series",
    "Trend",
    "plan_roles",
]

# Fewer finite values of the monitored metric than this and the verdict is `too_early`.
MIN_POINTS = 3
# How many of the latest monitored values the learning-curve forecast is fitted to.
FIT_POINTS = 40
# Oscillation needs noise of at least 5% of the level as well as noise larger than the trend.
_OSCILLATION_MIN_NOISE_PCT = 5.0
# An excess counts as real when it is larger than this many noise levels.
_SIGNIFICANCE = 2.0
# A loss that fell to near zero makes ratios meaningless (0.0002 -> 0.002 is +900% on a solved
# problem), so the flags' relative tests divide by at least a share of the run's starting level
# (the first value of the monitored or training series; the first training value is an average
# over the untrained model's first epoch). Overfitting must give back gl_alpha percent of the
# starting level itself; divergence and oscillation are measured against a quarter of it.
# Prechelt's criteria themselves stay exact.
_FLOOR_FRACTION = 0.25
# Mean absolute deviation -> standard deviation for Gaussian noise, and the variance of a value's
# deviation from the line through its two neighbours (1 + 1/4 + 1/4 for equal spacing).
_MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2)
_NEIGHBOUR_SCALE = math.sqrt(1.5)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float:
    # Plain float sums overflow to inf instead of raising as math.fsum does.
    return sum(values) / len(values)


def _theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Median of pairwise slopes, and the median intercept for that slope."""
    n = len(xs)
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(n) for j in range(i + 1, n)]
    slope = median(slopes)
    return slope, median(y - slope * x for x, y in zip(xs, ys, strict=True))


def _noise(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Robust scatter: each inner value's deviation from the line through its neighbours, taken
    as a mean absolute deviation around the median (the median absorbs a steady curvature; the
    mean, unlike MAD, does not collapse to 0 on a zig-zag)."""
    if len(xs) < 3:
        return None
    residuals = []
    for i in range(1, len(xs) - 1):
        frac = (xs[i] - xs[i - 1]) / (xs[i + 1] - xs[i - 1])
        residuals.append(ys[i] - (ys[i - 1] + (ys[i + 1] - ys[i - 1]) * frac))
    centre = median(residuals)
    return _mean([abs(r - centre) for r in residuals]) * _MEAN_ABS_TO_SIGMA / _NEIGHBOUR_SCALE


@dataclass(frozen=True, slots=True)
class Trend:
    from_epoch: int
    to_epoch: int
    points: int
    slope: float
    change: float  # of the fitted line from from_epoch to to_epoch
    relative_change_pct: float | None
    noise: float | None
    noise_pct: float | None
    level: float  # |median| of the raw values

    def worse(self, sign: int) -> float:
        """The change in the "worse" direction (positive when worsening)."""
        return sign * self.change

    def direction(self, sign: int) -> Literal["improving", "worsening", "flat"]:
        if abs(self.change) <= (self.noise or 0.0) or self.change == 0:
            return "flat"
        return "worsening" if sign * self.change > 0 else "improving"


def trend_of(points: Sequence[tuple[int, float, float]]) -> Trend | None:
    """Theil-Sen over (epoch, raw, smoothed) points: slope of the smoothed values, noise of the
    raw ones."""
    if len(points) < 2:
        return None
    xs = [float(p[0]) for p in points]
    raw = [p[1] for p in points]
    slope, _ = _theil_sen(xs, [p[2] for p in points])
    # The relative change uses the smoothed end points rather than the fitted line, which can
    # cross zero (and claim a fall of more than 100%) on a loss that fell by orders of magnitude.
    start = points[0][2]
    change = slope * (xs[-1] - xs[0])
    noise = _noise(xs, raw)
    level = abs(median(raw))
    return Trend(
        from_epoch=points[0][0],
        to_epoch=points[-1][0],
        points=len(points),
        slope=slope,
        change=change,
        relative_change_pct=100.0 * (points[-1][2] - start) / abs(start) if start != 0 else None,
        noise=noise,
        noise_pct=100.0 * noise / level if noise is not None and level > 0 else None,
        level=level,
    )


def relative_excess(value: float, best: float, sign: int, floor: float = 0.0) -> float:
    """How much worse than `best` `value` is, as a fraction of max(|best|, floor) (inf when that
    is 0)."""
    excess = sign * (value - best)
    scale = max(abs(best), floor)
    if scale == 0:
        return 0.0 if excess <= 0 else math.inf
    return excess / scale


@dataclass(frozen=True, slots=True)
class Divergence:
    """Why a run counts as diverging: `metric`'s latest value is not finite (`rise` None), or it
    has risen above `reference` = (epoch, value), its best or its window's first value, by `rise`
    times `scale` = max(|reference|, the floor)."""

    metric: str
    rise: float | None = None
    reference: tuple[int, float] | None = None
    reference_kind: Literal["best", "window start"] | None = None
    scale: float | None = None


class Series:
    """Running state of one metric: smoothing, bests, non-finite values and the recent window."""

    __slots__ = (
        "_ema",
        "_ema_n",
        "_first_value",
        "best",
        "constant",
        "finite_count",
        "first",
        "latest",
        "min_delta",
        "name",
        "nonfinite_count",
        "nonfinite_epochs",
        "opt",
        "sign",
        "trend",
        "weight",
        "window",
    )

    def __init__(self, name: str, sign: int, params: AnalysisParams) -> None:
        self.name = name
        self.sign = sign
        self.weight = params.ema_weight
        self.min_delta = params.min_delta
        self.window: deque[tuple[int, float, float]] = deque(maxlen=params.window)
        self._ema = 0.0
        self._ema_n = 0
        self._first_value: float | None = None
        self.constant = True
        self.first: tuple[int, float] | None = None
        self.opt: tuple[int, float] | None = None  # the true best so far (Prechelt's E_opt)
        self.best: tuple[int, float] | None = None  # the Keras best (beaten by > min_delta)
        self.latest: tuple[int, float] | None = None  # the latest observation, finite or not
        self.finite_count = 0
        self.nonfinite_count = 0
        self.nonfinite_epochs: list[int] = []  # the first few
        self.trend: Trend | None = None

    def observe(self, epoch: int, value: float) -> bool:
        """Take one value; True when it was finite (and the trend was updated)."""
        self.latest = (epoch, value)
        if not math.isfinite(value):
            # As in TensorBoard, a non-finite value passes through and leaves the EMA alone.
            self.nonfinite_count += 1
            if len(self.nonfinite_epochs) < 5:
                self.nonfinite_epochs.append(epoch)
            return False
        self.finite_count += 1
        if self.first is None:
            self.first = (epoch, value)
            self._first_value = value
        elif value != self._first_value:
            self.constant = False
        # TensorBoard's debiased EMA; a series constant so far is returned unsmoothed.
        self._ema = self._ema * self.weight + (1 - self.weight) * value
        self._ema_n += 1
        smoothed = value if self.constant else self._ema / (1 - self.weight**self._ema_n)
        if self.opt is None or self.sign * (value - self.opt[1]) < 0:
            self.opt = (epoch, value)
        if self.best is None or self.sign * (value - self.best[1]) < -self.min_delta:
            self.best = (epoch, value)
        self.window.append((epoch, value, smoothed))
        self.trend = trend_of(self.window)
        return True

    @property
    def latest_finite(self) -> float | None:
        return _finite(self.latest[1]) if self.latest is not None else None

    def improving(self) -> bool:
        """Still improving: the smoothed trend points the right way and the window holds a best."""
        trend = self.trend
        if trend is None or trend.points < MIN_POINTS or self.best is None:
            return False
        return self.sign * trend.slope < 0 and self.best[0] >= trend.from_epoch

    def start(self) -> float:
        """The starting level: |first finite value|, 0 before any."""
        return abs(self.first[1]) if self.first is not None else 0.0

    def rise(self, *, over_window: bool, floor: float) -> Divergence | None:
        """How far the latest value is above the best (or above the window's first value), as a
        fraction of it (at least `floor`); None with too few values or a non-finite latest."""
        value = self.latest_finite
        if value is None or self.opt is None or self.finite_count < MIN_POINTS:
            return None
        epoch, reference = self.window[0][:2] if over_window else self.opt
        rise = relative_excess(value, reference, self.sign, floor)
        kind: Literal["best", "window start"] = "window start" if over_window else "best"
        return Divergence(self.name, rise, (epoch, reference), kind, max(abs(reference), floor))


@dataclass(frozen=True, slots=True)
class Plan:
    """Which series play which role, resolved from the metric names the history contains."""

    monitor: str
    mode: Mode
    train: str | None  # Prechelt's E_tr: the training counterpart of the monitor
    gap: bool  # monitor is a validation metric with a training counterpart
    note: str | None


def plan_roles(params: AnalysisParams, names: set[str]) -> Plan:
    requested = params.monitor
    mode: Mode
    if params.mode == "auto":
        mode = "max" if "acc" in requested.lower() else "min"
    else:
        mode = params.mode
    monitor, note = requested, None
    if requested not in names and requested.startswith("val_"):
        counterpart = "train_" + requested[4:]
        if counterpart in names:
            monitor = counterpart
        elif "train_loss" in names:
            monitor, mode = "train_loss", "min"
        if monitor != requested:
            note = f"The run has no {requested} values, so {monitor} is judged instead."
    train: str | None = None
    if monitor.startswith("val_"):
        counterpart = "train_" + monitor[4:]
        if counterpart in names:
            train = counterpart
        elif mode == "min" and "train_loss" in names:
            train = "train_loss"
    elif monitor.startswith("train_"):
        train = monitor
    return Plan(monitor, mode, train, train is not None and train != monitor, note)


class Engine:
    """The per-epoch state machine. `step` must see epochs in increasing order."""

    def __init__(self, params: AnalysisParams, plan: Plan) -> None:
        self.params = params
        self.plan = plan
        self.sign = 1 if plan.mode == "min" else -1
        self.series: dict[str, Series] = {}
        for name in (plan.monitor, plan.train, "train_loss", "val_loss"):
            if name is not None and name not in self.series:
                sign = self.sign if name in (plan.monitor, plan.train) else 1
                self.series[name] = Series(name, sign, params)
        self.mon = self.series[plan.monitor]
        self.train = self.series[plan.train] if plan.train is not None else None
        self.gap = Series("gap", self.sign, params) if plan.gap else None
        self.prechelt = Prechelt(params.pq_strip_k, self.sign)
        # The latest raw monitored values, for the learning-curve forecast (bounded: the fit
        # costs O(FIT_POINTS) per analysis whatever the run's length).
        self.recent: deque[tuple[int, float]] = deque(maxlen=FIT_POINTS)
        # The monitor's Keras best after each of its latest values, for how much the best moved
        # over the latest windows (the stop prior's `recent` feature).
        self.bests: deque[float] = deque(maxlen=2 * params.window + 1)
        self.epochs = 0
        self.first_epoch: int | None = None
        self.last_epoch: int | None = None
        # Prechelt and patience criteria: (first epoch fired, latest value, its epoch).
        self.gl = Criterion()
        self.pq = Criterion()
        self.up = Criterion()
        self.patience = Criterion()
        self.pq_now = False
        # Current flag episodes: name -> first epoch of the episode.
        self.since: dict[str, int] = {}
        self.overfit_gl = False
        self.overfit_gap = False
        self.gap_widening = False
        self.diverging: Divergence | None = None
        # Noise of the monitor in percent of max(level, floor), for the oscillation flag.
        self.noise_pct: float | None = None

    def step(self, epoch: int, values: Mapping[str, float]) -> None:
        self.epochs += 1
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.last_epoch = epoch
        fresh: set[str] = set()
        for name, series in self.series.items():
            if name in values and series.observe(epoch, values[name]):
                fresh.add(name)
        if self.gap is not None and self.plan.train is not None:
            val, train = values.get(self.plan.monitor), values.get(self.plan.train)
            if val is not None and train is not None and math.isfinite(val - train):
                self.gap.observe(epoch, val - train)
        if self.train is not None and self.plan.train in fresh:
            self.prechelt.train(epoch, values[self.plan.train])
        if self.plan.monitor in fresh:
            self.recent.append((epoch, values[self.plan.monitor]))
            if self.mon.best is not None:
                self.bests.append(self.mon.best[1])
            self._criteria(epoch, values[self.plan.monitor])
        mon_best = self.mon.best
        if mon_best is not None:
            self.patience.measure(epoch, float(epoch - mon_best[0]))
            if epoch - mon_best[0] >= self.params.patience:
                self.patience.fire(epoch)
        self._flags(epoch)

    def _criteria(self, epoch: int, value: float) -> None:
        p = self.params
        reading = self.prechelt.observe(epoch, value)
        assert reading is not None  # only finite monitored values arrive here
        self.gl.measure(epoch, reading.gl)
        if reading.gl > p.gl_alpha:
            self.gl.fire(epoch)
        if not reading.strip_end:
            return
        assert reading.ups is not None
        self.up.measure(epoch, float(reading.ups))
        if reading.ups >= p.up_strips:
            self.up.fire(epoch)
        self.pq_now = False
        if reading.pq is not None:
            self.pq.measure(epoch, reading.pq)
            self.pq_now = reading.pq > p.pq_alpha
            if self.pq_now:
                self.pq.fire(epoch)

    def _flags(self, epoch: int) -> None:
        p, mon = self.params, self.mon
        trend = mon.trend
        enough = mon.finite_count >= MIN_POINTS
        start = max(mon.start(), self.train.start() if self.train is not None else 0.0)
        floor = _FLOOR_FRACTION * start
        checked = [s for s in self.series.values() if s.nonfinite_count]
        non_finite = min((s.nonfinite_epochs[0] for s in checked), default=None)

        self.diverging = None
        for series in (mon, self.series.get("train_loss"), self.train):
            if series is not None and series.latest is not None and series.latest_finite is None:
                self.diverging = Divergence(series.name)
                break
        if self.diverging is None:
            # A training loss has no business leaving its best far behind. A validation loss
            # may rise slowly when the model overfits, so only a jump within the window while
            # training is not improving counts as divergence there.
            limit = p.divergence_factor - 1
            loss = self.series.get("train_loss")
            found = None
            if loss is not None:
                found = loss.rise(over_window=False, floor=_FLOOR_FRACTION * loss.start())
            if found is not None and found.rise is not None and found.rise > limit:
                self.diverging = found
            elif self.plan.mode == "min" and mon is not loss:
                found = mon.rise(over_window=True, floor=floor)
                train_ok = self.train is not None and self.train.improving()
                if found is not None and found.rise is not None and found.rise > limit:
                    self.diverging = None if train_ok else found

        self.overfit_gl = self.overfit_gap = self.gap_widening = False
        if self.gap is not None and enough and self.train is not None:
            train_improving = self.train.improving()
            gl, value, opt = self.gl.value, mon.latest_finite, mon.opt
            if gl is not None and value is not None and opt is not None:
                excess = self.sign * (value - opt[1])
                noise = trend.noise if trend is not None and trend.noise is not None else 0.0
                floored_gl = 100.0 * relative_excess(value, opt[1], self.sign, start)
                self.overfit_gl = (
                    floored_gl > p.gl_alpha and excess > _SIGNIFICANCE * noise and train_improving
                )
            gap_trend = self.gap.trend
            if gap_trend is not None and gap_trend.points >= MIN_POINTS and opt is not None:
                limit = max(
                    p.gl_alpha / 100.0 * max(abs(opt[1]), start),
                    _SIGNIFICANCE * (gap_trend.noise or 0),
                )
                self.gap_widening = gap_trend.worse(self.sign) > limit
            worsening = trend is not None and trend.worse(self.sign) > 0
            self.overfit_gap = self.gap_widening and worsening and train_improving

        stall = epoch - mon.best[0] if mon.best is not None else 0
        plateau = enough and (stall >= p.patience or (self.pq_now and stall >= p.pq_strip_k))

        self.noise_pct = None
        if trend is not None and trend.points >= min(p.window, 5) and trend.noise is not None:
            level = max(trend.level, floor)
            self.noise_pct = 100.0 * trend.noise / level if level > 0 else None
        oscillation = (
            self.noise_pct is not None
            and trend is not None
            and trend.noise is not None
            and self.noise_pct >= _OSCILLATION_MIN_NOISE_PCT
            and trend.noise > abs(trend.change)
        )

        self._episode(
            "non_finite", non_finite is not None, epoch if non_finite is None else non_finite
        )
        self._episode("divergence", self.diverging is not None, epoch)
        self._episode("overfitting", self.overfit_gl or self.overfit_gap, epoch)
        self._episode("plateau", plateau, epoch)
        self._episode("oscillation", oscillation, epoch)

    def _episode(self, name: str, holds: bool, epoch: int) -> None:
        if not holds:
            self.since.pop(name, None)
        elif name not in self.since:
            self.since[name] = epoch


class Criterion:
    __slots__ = ("epoch", "fired_at", "value")

    def __init__(self) -> None:
        self.fired_at: int | None = None
        self.value: float | None = None
        self.epoch: int | None = None

    def fire(self, epoch: int) -> None:
        if self.fired_at is None:
            self.fired_at = epoch

    def measure(self, epoch: int, value: float) -> None:
        self.value, self.epoch = value, epoch
