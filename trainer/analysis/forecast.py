"""What continuing would buy: a learning-curve forecast of the remaining budget, pure Python.

The recent raw values of the monitored metric are fitted by two saturating learning-curve
families, each over a grid of rates: an exponential `y = a + b exp(-c (x - x_last))` and a power
law `y = a + b x^-c`. For a fixed rate both are linear in (a, b), so each is an ordinary least
squares fit with its covariance. The fits are averaged with weights exp(-RSS / 2 sigma^2) (their
Gaussian likelihood under the curve's own noise sigma; all have the same number of parameters).

The forecast is the probability that some epoch in (last, horizon] comes out better than
`threshold`: for each fit, 1 - prod_x Phi((f(x) + z s(x) - threshold) / sigma) averaged over the
fit's own uncertainty (s(x), the standard error of its prediction, taken as one shift z for all
future epochs, integrated by 3-point Gauss-Hermite), then over the fits. Future epochs are
grouped so the cost is bounded whatever the horizon. Values are in "lower is better" form (the
caller multiplies a maximised metric by -1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul

__all__ = ["Forecast", "forecast"]

# Half-lives (epochs) of the exponential family and exponents of the power-law family. The
# longest half-life makes the exponential nearly a straight line over any window we fit.
_HALF_LIVES = (1.5, 3.0, 6.0, 12.0, 25.0, 50.0, 100.0, 200.0, 400.0)
_POWERS = (0.3, 0.6, 1.0, 2.0)
# Future epochs are evaluated at most at this many points (each standing for a group of epochs).
_FUTURE_POINTS = 8
# 3-point Gauss-Hermite nodes and weights for a standard normal.
_GH = ((0.0, 2.0 / 3.0), (math.sqrt(3.0), 1.0 / 6.0), (-math.sqrt(3.0), 1.0 / 6.0))
_SQRT2 = math.sqrt(2.0)
# The recency half-life of the fit's weights, as a share of the points fitted.
RECENCY = 1.0


@dataclass(frozen=True, slots=True)
class Forecast:
    """`probability`: that an epoch up to `horizon` beats `threshold`. `expected_final`: the
    weighted fits' value at `horizon`, with `final_sd` their spread (fit uncertainty included).
    `model`: the family of the heaviest fit ("exponential" or "power law")."""

    probability: float
    horizon: int
    expected_final: float
    final_sd: float
    model: str
    sigma: float
    # (epoch, expected improvement of the best by then): E[max(0, best - min of the values up
    # to that epoch)], in the metric's units, at the end of each group of future epochs.
    gains: tuple[tuple[int, float], ...] = ()


def _future(last: int, horizon: int) -> list[tuple[float, int]]:
    """(epoch, how many epochs it stands for) covering last+1 .. horizon."""
    n = horizon - last
    if n <= 0:
        return []
    if n <= _FUTURE_POINTS:
        return [(float(last + i), 1) for i in range(1, n + 1)]
    out: list[tuple[float, int]] = []
    start = last
    for i in range(1, _FUTURE_POINTS + 1):
        end = last + round(n * i / _FUTURE_POINTS)
        if end > start:
            out.append(((start + 1 + end) / 2.0, end - start))
            start = end
    return out


def forecast(
    points: Sequence[tuple[int, float]],
    sigma: float,
    threshold: float,
    horizon: int,
    best: float | None = None,
) -> Forecast | None:
    """The forecast from `points` (epoch, value; increasing epochs, finite, lower is better),
    with `sigma` the noise of one value; None with fewer than 4 points. With `best` (the best
    value so far), `gains` holds the expected improvement of the best by each future epoch."""
    n = len(points)
    if n < 4:
        return None
    xs = [float(p[0]) for p in points]
    ys = [p[1] for p in points]
    last = points[-1][0]
    x_last = xs[-1]
    # Weighted least squares: a point's weight halves every RECENCY * n epochs back, so the
    # curve's recent regime outweighs its early transient without forgetting it.
    span = max(1.0, RECENCY * n)
    ws = [0.5 ** ((x_last - x) / span) for x in xs]
    sw = sum(ws)
    mean_y = sum(map(mul, ws, ys)) / sw
    syy = sum(w * (y - mean_y) ** 2 for w, y in zip(ws, ys, strict=True))
    spread = max(abs(mean_y), max(ys) - min(ys))
    sigma = max(sigma, 1e-9 * spread, 1e-300)
    future = _future(last, horizon)
    fits: list[tuple[float, str, float, float, float]] = []  # log weight, family, a, b, rate
    covs: list[tuple[float, float, float]] = []  # what the prediction variance needs
    for family, rates in (
        ("exponential", [math.log(2.0) / h for h in _HALF_LIVES]),
        ("power law", list(_POWERS)),
    ):
        for c in rates:
            # Sufficient statistics, summed in C (map/mul): the fit costs O(n) per rate.
            if family == "exponential":
                gs = [math.exp(-c * (x - x_last)) for x in xs]
            else:
                gs = [max(x, 1.0) ** -c for x in xs]
            wg = list(map(mul, ws, gs))
            mean_g = sum(wg) / sw
            sgg = sum(map(mul, wg, gs)) - sw * mean_g * mean_g
            if sgg <= 1e-12 * sw * max(1.0, mean_g * mean_g):
                continue
            b = (sum(map(mul, wg, ys)) - sw * mean_g * mean_y) / sgg
            a = mean_y - b * mean_g
            rss = max(0.0, syy - b * b * sgg)
            fits.append((-rss / (2.0 * sigma * sigma), family, a, b, c))
            # With the weights read as precisions (older points noisier, which is conservative):
            # Var(a + b g) / sigma^2 = 1/sw + (g - mean_g)^2 / sgg; stored as (mean_g, sgg, sw).
            covs.append((mean_g, sgg, sw))
    if not fits:
        return None
    # A curve no fit follows is less predictable than its neighbour-to-neighbour noise says: the
    # best fit's residual scatter `fit_sd` widens the fits' own uncertainty (and tempers their
    # weights), while one future value still scatters by `sigma` around the curve.
    rms = math.sqrt(min(-2.0 * f[0] for f in fits) * sigma * sigma / max(1.0, sw - 2))
    fit_sd = max(sigma, rms)
    if rms > sigma:
        fits = [(f[0] * (sigma / rms) ** 2, f[1], f[2], f[3], f[4]) for f in fits]
    top = max(f[0] for f in fits)
    weights = [math.exp(f[0] - top) for f in fits]
    total = sum(weights)
    probability = final = final2 = 0.0
    gains = [0.0] * len(future)
    gain_weight = 0.0
    best_fit = max(range(len(fits)), key=lambda i: weights[i])
    for weight, fit, cov in zip(weights, fits, covs, strict=True):
        w = weight / total
        if w < 1e-3:  # a fit this unlikely cannot move the probability by more than 0.001
            continue
        _, family, a, b, c = fit
        mean_g, sgg, count = cov
        g_end = _basis(family, c, float(horizon), x_last)
        value_end = a + b * g_end
        sd_end = fit_sd * math.sqrt(1.0 / count + (g_end - mean_g) ** 2 / sgg)
        final += w * value_end
        final2 += w * (value_end * value_end + sd_end * sd_end)
        if not future:
            continue
        # Each future group: (fitted value - threshold, its standard error, epochs) in sigmas.
        ahead = []
        for x, repeat in future:
            g = _basis(family, c, x, x_last)
            sd = fit_sd * math.sqrt(1.0 / count + (g - mean_g) ** 2 / sgg)
            ahead.append(((a + b * g - threshold) / sigma, sd / sigma, repeat))
        stay = 0.0  # the probability that no future epoch beats the threshold
        for z, gh_weight in _GH:
            log_stay = 0.0
            for gap, sd, repeat in ahead:
                p_above = 0.5 * math.erfc(-(gap + z * sd) / _SQRT2)  # Phi
                if p_above <= 0.0:
                    log_stay = -math.inf
                    break
                log_stay += repeat * math.log(p_above)
            stay += gh_weight * math.exp(log_stay)
        probability += w * (1.0 - stay)
        if best is not None and w >= _GAIN_WEIGHT:
            shift = (threshold - best) / sigma  # ahead's gaps are from the threshold
            gain_weight += w
            for j, gain in enumerate(_gains([(g + shift, sd, r) for g, sd, r in ahead])):
                gains[j] += w * gain * sigma
    final_sd = math.sqrt(max(0.0, final2 - final * final))
    return Forecast(
        probability=min(1.0, max(0.0, probability)),
        horizon=horizon,
        expected_final=final,
        final_sd=final_sd,
        model=fits[best_fit][1],
        sigma=sigma,
        gains=tuple(
            (round(x + (r - 1) / 2.0), g / max(gain_weight, 1e-300))
            for (x, r), g in zip(future, gains, strict=True)
        )
        if best is not None
        else (),
    )


# Gains are integrated over thresholds below the best at this many steps, over the fits that
# carry at least _GAIN_WEIGHT of the weight (the cost grows with both; it runs every epoch).
_GAIN_STEPS = 8
_GAIN_WEIGHT = 0.01


def _gains(ahead: Sequence[tuple[float, float, int]]) -> list[float]:
    """E[max(0, best - min of the future values up to the end of group j)] in noise levels, for
    each group j, from (fitted value - best, its standard error, epochs) in noise levels:
    the integral over u >= 0 of P(some value up to j is below best - u), by the trapezoid rule
    on a grid reaching 4 noise levels past the lowest fitted value."""
    deepest = max(0.0, -min(gap - 2.0 * sd for gap, sd, _ in ahead))
    step = (deepest + 4.0) / _GAIN_STEPS
    out = [0.0] * len(ahead)
    for z, gh_weight in _GH:
        for k in range(_GAIN_STEPS + 1):
            u = k * step
            weight = gh_weight * step * (0.5 if k in (0, _GAIN_STEPS) else 1.0)
            log_stay = 0.0
            for j, (gap, sd, repeat) in enumerate(ahead):
                if log_stay > -math.inf:
                    p_above = 0.5 * math.erfc(-(gap + z * sd + u) / _SQRT2)
                    log_stay = log_stay + repeat * math.log(p_above) if p_above > 0.0 else -math.inf
                out[j] += weight * (1.0 - math.exp(log_stay))
            if log_stay > -1e-6:  # no later group, and no larger u, adds anything that shows
                break
    return out


def _basis(family: str, c: float, x: float, x_last: float) -> float:
    if family == "exponential":
        return math.exp(-c * (x - x_last))
    return float(max(x, 1.0) ** -c)
