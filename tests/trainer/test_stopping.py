"""Each early-stopping criterion stops at the epoch worked out by hand for a given sequence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from trainer.spec import EarlyStoppingSpec
from trainer.stopping import EarlyStopper, StopDecision


def _run(
    spec: EarlyStoppingSpec, values: Sequence[float], train: Sequence[float] | None = None
) -> tuple[int | None, StopDecision, EarlyStopper]:
    """Feed `values` as the monitor (and `train` as train_loss) until a stop; (epoch, decision)."""
    stopper = EarlyStopper(spec)
    decision = StopDecision(stop=False, improved=False)
    for epoch, value in enumerate(values, start=1):
        metrics: dict[str, float] = {spec.monitor: value}
        if train is not None:
            metrics["train_loss"] = train[epoch - 1]
        decision = stopper.update(epoch, metrics)
        if decision.stop:
            return epoch, decision, stopper
    return None, decision, stopper


def test_patience_stops_after_that_many_epochs_without_improvement() -> None:
    # best 0.8 at epoch 2; epochs 3 and 4 do not improve: wait reaches 2 at epoch 4
    epoch, decision, stopper = _run(EarlyStoppingSpec(patience=2), [1.0, 0.8, 0.9, 0.85, 0.7])
    assert epoch == 4
    assert decision.criterion == "patience"
    assert decision.reason is not None
    assert "best 0.8 at epoch 2" in decision.reason and "patience 2" in decision.reason
    assert (stopper.best_epoch, stopper.best_value) == (2, 0.8)


def test_an_improving_run_never_runs_out_of_patience() -> None:
    epoch, _, stopper = _run(EarlyStoppingSpec(patience=0), [1.0, 0.9, 0.8, 0.7])
    assert epoch is None
    assert stopper.best_epoch == 4


def test_patience_zero_stops_at_the_first_epoch_that_does_not_improve() -> None:
    epoch, _, _ = _run(EarlyStoppingSpec(patience=0), [1.0, 0.9, 0.95])
    assert epoch == 3


def test_min_delta_makes_small_improvements_count_as_none() -> None:
    # 0.95 and 0.92 are not below 1.0 - 0.1, so wait reaches 2 at epoch 3
    values = [1.0, 0.95, 0.92, 0.5]
    epoch, _, stopper = _run(EarlyStoppingSpec(patience=2, min_delta=0.1), values)
    assert epoch == 3
    assert stopper.best_epoch == 1
    assert _run(EarlyStoppingSpec(patience=2), values)[0] is None


def test_baseline_only_resets_patience_on_epochs_that_beat_it() -> None:
    # Keras: wait counts 1, 2, 3; epochs 1-2 improve but stay above 0.5, so epoch 3 stops
    values = [0.9, 0.8, 0.85]
    epoch, decision, _ = _run(EarlyStoppingSpec(patience=2, baseline=0.5), values)
    assert epoch == 3
    assert decision.reason is not None and "baseline 0.5" in decision.reason
    assert _run(EarlyStoppingSpec(patience=2), values)[0] is None


def test_start_from_epoch_ignores_the_warm_up_epochs() -> None:
    values = [0.5, 0.4, 0.3, 1.0, 1.1]
    epoch, _, stopper = _run(EarlyStoppingSpec(patience=1, start_from_epoch=3), values)
    assert epoch == 5
    assert stopper.best_epoch == 4  # epochs 1-3 were never watched
    assert _run(EarlyStoppingSpec(patience=1), values)[0] == 4


def test_max_mode_watches_accuracy_going_up() -> None:
    spec = EarlyStoppingSpec(monitor="val_accuracy", patience=2)
    epoch, _, stopper = _run(spec, [0.5, 0.6, 0.55, 0.58, 0.9])
    assert epoch == 4
    assert (stopper.best_epoch, stopper.best_value) == (2, 0.6)


def test_divergence_threshold_stops_once_the_monitor_is_worse_than_it() -> None:
    spec = EarlyStoppingSpec(patience=None, divergence_threshold=2.0)
    epoch, decision, _ = _run(spec, [1.0, 2.0, 2.5])
    assert epoch == 3  # 2.0 is not above the threshold
    assert decision.criterion == "divergence_threshold"
    assert decision.reason == "val_loss 2.5 is above divergence_threshold 2 at epoch 3"


def test_check_finite_stops_at_the_first_nan() -> None:
    epoch, decision, _ = _run(EarlyStoppingSpec(patience=None), [1.0, 0.9, math.nan, 0.5])
    assert epoch == 3
    assert decision.criterion == "check_finite"
    assert decision.reason == "val_loss is nan at epoch 3"


def test_check_finite_off_lets_a_nan_through() -> None:
    spec = EarlyStoppingSpec(patience=None, check_finite=False)
    assert _run(spec, [1.0, math.inf, math.nan, 0.5])[0] is None


def test_generalization_loss_stops_when_gl_exceeds_alpha() -> None:
    # GL(3) = 100 * (0.83 / 0.8 - 1) = 3.75 <= 5; GL(4) = 6.25 > 5
    epoch, decision, _ = _run(EarlyStoppingSpec(patience=None, gl_alpha=5), [1.0, 0.8, 0.83, 0.85])
    assert epoch == 4
    assert decision.criterion == "gl"
    assert decision.reason is not None and "GL = 6.25%" in decision.reason


def test_progress_quotient_stops_at_the_end_of_the_strip_where_training_stalls() -> None:
    # strip 1 (epochs 1-5): GL(5) = 7.5%, P_5 = 1000 * (0.8 / 0.6 - 1) = 333 -> PQ 0.0225
    # strip 2 (epochs 6-10): GL(10) = 5%, P_5 = 1000 * (0.458 / 0.456 - 1) = 4.39 -> PQ 1.14 > 0.5
    val = [1.0, 0.9, 0.8, 0.85, 0.86, 0.84, 0.84, 0.84, 0.84, 0.84]
    train = [1.0, 0.9, 0.8, 0.7, 0.6, 0.460, 0.459, 0.458, 0.457, 0.456]
    spec = EarlyStoppingSpec(patience=None, pq_alpha=0.5, pq_strip_k=5)
    epoch, decision, _ = _run(spec, val, train)
    assert epoch == 10
    assert decision.criterion == "pq"
    assert decision.reason is not None and "GL/P_5 = 1.14" in decision.reason


def test_up_stops_after_the_monitor_rose_at_s_successive_strip_ends() -> None:
    # strips of 2: rises at the ends of epochs 4 (0.95 > 0.9) and 6 (0.97 > 0.95)
    val = [1.0, 0.9, 0.8, 0.95, 0.9, 0.97, 0.8, 0.85]
    epoch, decision, _ = _run(EarlyStoppingSpec(patience=None, up_strips=2, pq_strip_k=2), val)
    assert epoch == 6
    assert decision.criterion == "up"


def test_up_starts_counting_again_when_a_strip_end_does_not_rise() -> None:
    # rises at 4, not at 6 (0.93 < 0.95), then at 8 and 10
    val = [1.0, 0.9, 0.8, 0.95, 0.9, 0.93, 0.9, 0.96, 0.9, 0.99]
    spec = EarlyStoppingSpec(patience=None, up_strips=2, pq_strip_k=2)
    assert _run(spec, val)[0] == 10


def test_prechelt_criteria_refuse_a_monitor_that_is_maximised() -> None:
    with pytest.raises(ValidationError, match="gl_alpha: Prechelt's criteria need a monitor"):
        EarlyStoppingSpec(monitor="val_accuracy", gl_alpha=2.0)


def test_best_value_is_tracked_with_early_stopping_criteria_off() -> None:
    epoch, _, stopper = _run(EarlyStoppingSpec(patience=None), [3.0, 1.0, 2.0, 5.0])
    assert epoch is None
    assert (stopper.best_epoch, stopper.best_value) == (2, 1.0)
