"""The learning-curve forecast on curves whose future is known."""

from __future__ import annotations

import random

import pytest

from trainer.analysis.forecast import forecast


def _decay(last: int) -> list[tuple[int, float]]:
    # A half-life of 6 epochs, one of the grid's rates (a rate between two grid rates is fitted
    # with the nearer one, which misplaces the asymptote of a noise-free curve).
    return [(t, 0.3 + 0.5 ** (t / 6)) for t in range(max(1, last - 39), last + 1)]


def test_a_clean_exponential_is_extrapolated_to_its_asymptote() -> None:
    points = _decay(30)
    best = points[-1][1]  # 0.33125; the curve goes on down to 0.30010 at epoch 80

    more = forecast(points, 1e-4, best - 0.025, horizon=80)
    impossible = forecast(points, 1e-4, best - 0.035, horizon=80)

    assert more is not None and impossible is not None
    assert more.probability > 0.95
    assert impossible.probability < 0.05
    assert more.expected_final == pytest.approx(0.3 + 0.5 ** (80 / 6), abs=1e-3)
    assert more.model == "exponential"


def test_with_no_epochs_left_nothing_can_be_gained() -> None:
    points = _decay(30)

    done = forecast(points, 1e-4, points[-1][1] - 1e-3, horizon=30)

    assert done is not None and done.probability == 0.0


def test_on_a_flat_noisy_curve_luck_grows_with_the_epochs_left() -> None:
    rng = random.Random(3)
    points = [(t, 1.0 + 0.01 * rng.gauss(0, 1)) for t in range(1, 41)]
    threshold = min(v for _, v in points) - 0.005

    chances = [forecast(points, 0.01, threshold, horizon=40 + n) for n in (5, 50, 500)]

    probabilities = [c.probability for c in chances if c is not None]
    assert len(probabilities) == 3
    assert probabilities[0] < probabilities[1] < probabilities[2]
    assert probabilities[0] < 0.2


def test_too_few_points_give_no_forecast() -> None:
    assert forecast([(1, 1.0), (2, 0.9), (3, 0.8)], 0.01, 0.5, horizon=10) is None


def test_the_expected_gain_of_a_clean_curve_is_what_its_future_holds() -> None:
    points = _decay(30)
    best = points[-1][1]

    more = forecast(points, 1e-4, best - 0.025, horizon=80, best=best)

    assert more is not None and more.gains[-1][0] == 80
    # The curve goes on down to 0.30010 at epoch 80: the best improves by about 0.031.
    assert more.gains[-1][1] == pytest.approx(best - (0.3 + 0.5 ** (80 / 6)), abs=2e-3)
    assert [g for _, g in more.gains] == sorted(g for _, g in more.gains)


def test_on_a_flat_noisy_curve_the_expected_gain_is_luck_and_grows_slowly() -> None:
    rng = random.Random(5)
    points = [(t, 1.0 + 0.01 * rng.gauss(0, 1)) for t in range(1, 41)]
    best = min(v for _, v in points)

    flat = forecast(points, 0.01, best - 0.001, horizon=80, best=best)
    done = forecast(points, 0.01, best - 0.001, horizon=40, best=best)

    assert flat is not None and done is not None and done.gains == ()
    gains = [g for _, g in flat.gains]
    assert gains == sorted(gains)
    # Forty more epochs of the same noise beat a best of forty by a fraction of one noise level.
    assert 0.0 < gains[-1] < 0.01
