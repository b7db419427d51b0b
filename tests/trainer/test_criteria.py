"""Prechelt's criteria are one implementation: the early stopper and the analysis agree on when
each one fires, on any sequence, including gaps and non-finite values."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from trainer.analysis import AnalysisParams, EpochMetrics, analyze_loss
from trainer.criteria import Prechelt, generalization_loss, training_progress
from trainer.spec import EarlyStoppingSpec
from trainer.stopping import EarlyStopper

values_st = st.one_of(
    st.floats(0.05, 2.0),
    st.sampled_from([math.nan, math.inf, 0.0]),
)
rows_st = st.lists(st.tuples(values_st, values_st), min_size=1, max_size=40)


def _stopper_epoch(spec: EarlyStoppingSpec, rows: list[tuple[float, float]]) -> int | None:
    stopper = EarlyStopper(spec)
    for epoch, (val, train) in enumerate(rows, start=1):
        if stopper.update(epoch, {"val_loss": val, "train_loss": train}).stop:
            return epoch
    return None


@given(rows_st, st.sampled_from(["gl", "pq", "up"]), st.integers(2, 5))
def test_the_stopper_stops_where_the_analysis_says_the_criterion_first_fired(
    rows: list[tuple[float, float]], criterion: str, k: int
) -> None:
    spec = EarlyStoppingSpec(
        patience=None,
        check_finite=False,
        pq_strip_k=k,
        gl_alpha=5.0 if criterion == "gl" else None,
        pq_alpha=0.5 if criterion == "pq" else None,
        up_strips=2 if criterion == "up" else None,
    )
    points = [
        EpochMetrics(epoch, {"val_loss": val, "train_loss": train})
        for epoch, (val, train) in enumerate(rows, start=1)
    ]
    params = AnalysisParams(pq_strip_k=k, gl_alpha=5.0, pq_alpha=0.5, up_strips=2)

    fired = getattr(analyze_loss(points, params).criteria, criterion)

    assert _stopper_epoch(spec, rows) == fired.epoch


def test_gl_and_progress_at_a_zero_optimum() -> None:
    assert generalization_loss(0.0, 0.0) == 0.0
    assert generalization_loss(0.1, 0.0) == math.inf
    assert training_progress([0.0, 0.0]) == 0.0
    assert training_progress([0.0, 0.1]) == math.inf


def test_a_partial_strip_has_no_progress_and_a_missing_strip_end_restarts_up() -> None:
    state = Prechelt(strip_k=2)
    state.train(2, 0.5)  # epoch 1 has no training value: strip 1-2 is partial
    state.observe(1, 1.0)
    end = state.observe(2, 0.9)
    assert end is not None and (end.pq, end.ups) == (None, 0)
    state.train(3, 0.4)
    state.train(4, 0.3)
    state.observe(3, 1.1)
    assert state.observe(4, math.nan) is None  # not observed
    state.observe(5, 1.2)
    later = state.observe(6, 1.3)  # worse than epoch 4? epoch 4 has no value: count restarts
    assert later is not None and later.ups == 0 and later.previous == (2, 0.9)
