"""Loss analysis: Prechelt's criteria by hand, curves with known answers, and properties."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trainer.analysis import (
    AnalysisParams,
    EpochMetrics,
    LossAnalysis,
    LossAnalyzer,
    analyze_loss,
    summarize_run,
)
from trainer.records import EpochRecord

NAN = math.nan
INF = math.inf


def history(
    train: Sequence[float | None],
    val: Sequence[float | None] | None = None,
    start: int = 1,
) -> list[EpochMetrics]:
    """Epochs start, start+1, ... with train_loss and (where given) val_loss."""
    points = []
    for i, value in enumerate(train):
        values: dict[str, float] = {}
        if value is not None:
            values["train_loss"] = value
        checked = val[i] if val is not None else None
        if checked is not None:
            values["val_loss"] = checked
        points.append(EpochMetrics(start + i, values))
    return points


def curve(fn: Callable[[int], float], epochs: int) -> list[float]:
    return [fn(t) for t in range(1, epochs + 1)]


def flag_names(analysis: LossAnalysis) -> dict[str, int]:
    return {flag.name: flag.since_epoch for flag in analysis.flags}


def prefixes(points: list[EpochMetrics]) -> list[LossAnalysis]:
    """The analysis after each epoch, as a live watcher sees it."""
    analyzer = LossAnalyzer()
    out = []
    for point in points:
        analyzer.add(point)
        out.append(analyzer.result())
    return out


def strict_json(analysis: LossAnalysis) -> object:
    """Parse the JSON form, refusing the NaN/Infinity extensions."""

    def refuse(name: str) -> object:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(analysis.model_dump_json(), parse_constant=refuse)


# --- Prechelt's criteria and Keras patience, by hand ------------------------------------------


def test_gl_is_percent_above_the_best_so_far_and_fires_at_the_first_epoch_above_alpha() -> None:
    # GL(t) = 100 (E_va(t) / E_opt(t) - 1): 0, 0, 12.5, 0, 20.
    points = history([1.0, 0.9, 0.8, 0.7, 0.6], [1.0, 0.8, 0.9, 0.7, 0.84])

    gl = analyze_loss(points, AnalysisParams(gl_alpha=10)).criteria.gl

    assert (gl.fired, gl.epoch, gl.value_epoch) == (True, 3, 5)
    assert gl.value == pytest.approx(20.0)
    assert gl.threshold == 10


def test_gl_does_not_fire_when_no_epoch_exceeds_alpha() -> None:
    points = history([1.0, 0.9, 0.8, 0.7, 0.6], [1.0, 0.8, 0.9, 0.7, 0.84])

    gl = analyze_loss(points, AnalysisParams(gl_alpha=25)).criteria.gl

    assert (gl.fired, gl.epoch) == (False, None)


def test_pq_divides_gl_by_per_mille_training_progress_at_strip_ends() -> None:
    # k=2, strips end at epochs 2, 4, 6.
    # t=4: GL = 100 (0.92/0.9 - 1) = 2.2222, P = 1000 (0.65/0.6 - 1) = 83.333, PQ = 0.026667
    # t=6: GL = 100 (0.94/0.9 - 1) = 4.4444, P = 1000 (0.545/0.54 - 1) = 9.2593, PQ = 0.48
    train = [1.0, 0.8, 0.7, 0.6, 0.55, 0.54]
    val = [1.0, 0.9, 0.95, 0.92, 0.93, 0.94]

    fired = analyze_loss(history(train, val), AnalysisParams(pq_strip_k=2, pq_alpha=0.4))
    quiet = analyze_loss(history(train[:4], val[:4]), AnalysisParams(pq_strip_k=2, pq_alpha=0.4))

    pq = fired.criteria.pq
    assert (pq.fired, pq.epoch, pq.value_epoch) == (True, 6, 6)
    assert pq.value == pytest.approx(0.48, rel=1e-5)
    assert quiet.criteria.pq.value == pytest.approx(0.026667, rel=1e-4)
    assert not quiet.criteria.pq.fired


def test_up_counts_successive_strips_whose_end_is_worse_than_the_previous_strip_end() -> None:
    # k=2: strip ends 2, 4, 6, 8, 10 hold 0.5, 0.6 (up), 0.55 (down), 0.6 (up), 0.7 (up).
    val = [0.9, 0.5, 0.1, 0.6, 0.1, 0.55, 0.1, 0.6, 0.1, 0.7]
    train = curve(lambda t: 1.0 / t, 10)

    two = analyze_loss(history(train, val), AnalysisParams(pq_strip_k=2, up_strips=2))
    three = analyze_loss(history(train, val), AnalysisParams(pq_strip_k=2, up_strips=3))

    assert (two.criteria.up.fired, two.criteria.up.epoch, two.criteria.up.value) == (True, 10, 2)
    assert (three.criteria.up.fired, three.criteria.up.epoch) == (False, None)


def test_patience_counts_epochs_since_a_strict_improvement_as_keras_does() -> None:
    # 0.9 at epoch 4 only equals the best of epoch 2: not an improvement.
    points = history([1.0, 0.9, 0.8, 0.7, 0.6], [1.0, 0.9, 0.95, 0.9, 0.91])

    analysis = analyze_loss(points, AnalysisParams(patience=3))

    assert (analysis.best_epoch, analysis.epochs_since_improvement) == (2, 3)
    assert (analysis.criteria.patience.fired, analysis.criteria.patience.epoch) == (True, 5)


def test_an_improvement_must_beat_the_best_by_more_than_min_delta() -> None:
    points = history([1.0, 0.9, 0.8, 0.7], [1.0, 0.96, 0.9, 0.88])

    analysis = analyze_loss(points, AnalysisParams(min_delta=0.05))

    assert (analysis.best_epoch, analysis.best_value, analysis.epochs_since_improvement) == (
        3,
        0.9,
        1,
    )


# --- curves with known answers ----------------------------------------------------------------


def test_a_steady_descent_is_improving_and_never_overfitting() -> None:
    train = curve(lambda t: math.exp(-t / 20), 60)
    val = curve(lambda t: 1.1 * math.exp(-t / 20) + 0.05, 60)

    seen = prefixes(history(train, val))

    final = seen[-1]
    assert (final.verdict, final.recommendation) == ("improving", "continue")
    assert final.best_epoch == 60
    assert final.trend is not None and final.trend.direction == "improving"
    assert all("overfitting" not in flag_names(a) for a in seen)
    assert all(a.verdict in ("too_early", "improving") for a in seen)
    assert not final.criteria.gl.fired


def test_a_u_shaped_validation_loss_with_falling_training_loss_is_overfitting() -> None:
    # val has its minimum 0.5 at epoch 20; Prechelt's GL = 100 * 0.002 (t-20)^2 / 0.5 first
    # exceeds 5 at t = 24. The flag also wants the excess above 5% of the starting level
    # max(val(1), train(1)) = 1.222: 0.002 (t-20)^2 > 0.0611 first at t = 26.
    train = curve(lambda t: math.exp(-t / 15), 40)
    val = curve(lambda t: 0.5 + 0.002 * (t - 20) ** 2, 40)

    analysis = analyze_loss(history(train, val))

    assert (analysis.verdict, analysis.recommendation) == ("overfitting", "stop_and_restore_best")
    assert analysis.best_epoch == 20
    assert flag_names(analysis)["overfitting"] == 26
    assert (analysis.criteria.gl.fired, analysis.criteria.gl.epoch) == (True, 24)
    assert analysis.generalization_gap is not None and analysis.generalization_gap.widening
    assert "above its best at epoch 20" in analysis.reasons[0]


def test_overfitting_is_not_flagged_before_the_validation_minimum() -> None:
    train = curve(lambda t: math.exp(-t / 15), 40)
    val = curve(lambda t: 0.5 + 0.002 * (t - 20) ** 2, 40)

    seen = prefixes(history(train, val))

    assert all(a.verdict != "overfitting" for a in seen[:20])


def test_a_widening_gap_while_validation_creeps_up_is_overfitting_with_nothing_left_to_gain() -> (
    None
):
    # val rises 0.001 per epoch after epoch 15 (GL stays under 5% of the starting level 1.0)
    # while train falls 0.03 per epoch: the gap grows by ~0.31 over the last 10 epochs. The
    # forecast of a line rising for 15 epochs gives continuing no chance: stop (this used to say
    # add_regularization, which left the run going).
    train = curve(lambda t: 1.0 - 0.03 * t, 30)
    val = curve(lambda t: 0.6 + 0.001 * max(0, t - 15), 30)

    analysis = analyze_loss(history(train, val))

    assert (analysis.verdict, analysis.recommendation) == ("overfitting", "stop_and_restore_best")
    assert analysis.forecast is not None and analysis.forecast.probability < 0.05
    assert analysis.generalization_gap is not None and analysis.generalization_gap.widening
    assert not analysis.criteria.gl.fired


def test_validation_loss_creeping_up_on_a_solved_problem_is_not_overfitting() -> None:
    # A real blobs run: train falls from 0.288 to ~0; val drifts 0.0072 -> 0.0127 (GL 76%), which
    # is 1.9% of the starting level 0.288, under gl_alpha = 5%.
    train = [0.288, 0.0008, 0.0003] + [0.0002 * 0.9**k for k in range(17)]
    val = [0.0076, 0.0072, 0.0073, 0.0073, 0.0078, 0.0096, 0.0084, 0.0101, 0.0100, 0.0097]
    val += [0.0109, 0.0103, 0.0112, 0.0109, 0.0105, 0.0116, 0.0122, 0.0113, 0.0127, 0.0127]

    analysis = analyze_loss(history(train, val))

    assert analysis.criteria.gl.fired
    assert "overfitting" not in flag_names(analysis)
    assert (analysis.verdict, analysis.best_epoch) == ("converged", 2)


def test_a_flat_curve_is_plateaued() -> None:
    analysis = analyze_loss(history([1.0] * 30, [1.2] * 30))

    assert (analysis.verdict, analysis.recommendation) == ("plateaued", "reduce_learning_rate")
    assert flag_names(analysis) == {"plateau": 11}
    assert analysis.trend is not None and analysis.trend.direction == "flat"


def test_a_descent_that_levels_off_has_converged() -> None:
    train = curve(lambda t: 0.2 + math.exp(-t / 3), 40)
    val = curve(lambda t: 0.3 + math.exp(-t / 3) if t < 25 else 0.3 + math.exp(-25 / 3), 40)

    analysis = analyze_loss(history(train, val))

    assert (analysis.verdict, analysis.recommendation) == ("converged", "stop_and_restore_best")
    assert analysis.best_epoch == 25


def test_an_exploding_loss_is_diverging_from_the_epoch_it_has_doubled() -> None:
    # best 0.6 at epoch 5, then x1.5 per epoch: 0.9 (+50%), 1.35 (+125% > factor 2 - 1) at epoch 7.
    train = [1.0, 0.9, 0.8, 0.7, 0.6, 0.9, 1.35, 2.025, 3.0375]

    analysis = analyze_loss(history(train))

    assert (analysis.verdict, analysis.recommendation) == ("diverging", "investigate_divergence")
    assert flag_names(analysis)["divergence"] == 7
    assert "more than divergence_factor 2" in analysis.reasons[0]


def test_a_loss_near_zero_that_wobbles_is_not_diverging() -> None:
    # 0.0004 is 4x the best 0.0001, but a speck against the first value 1.0: a solved problem.
    train = [1.0, 0.1, 0.01, 0.001, 0.0001, 0.0004, 0.0002, 0.0004]

    analysis = analyze_loss(history(train))

    assert "divergence" not in flag_names(analysis)
    assert analysis.verdict != "diverging"


def test_a_nan_loss_is_diverging_and_the_result_stays_valid_json() -> None:
    train = [1.0, 0.8, 0.7, 0.65, NAN]
    val = [1.1, 0.9, 0.8, 0.75, NAN]

    analysis = analyze_loss(history(train, val))

    assert (analysis.verdict, analysis.recommendation) == ("diverging", "investigate_divergence")
    assert flag_names(analysis) == {"non_finite": 5, "divergence": 5}
    assert analysis.current_value is None and analysis.current_epoch == 5
    assert any("nan at epoch 5" in note for note in analysis.notes)
    assert analysis.best_epoch == 4
    strict_json(analysis)


def test_an_infinite_training_loss_is_diverging_even_with_finite_validation() -> None:
    analysis = analyze_loss(history([1.0, 0.8, 0.7, INF], [1.0, 0.9, 0.8, 0.79]))

    assert analysis.verdict == "diverging"
    assert "train_loss is inf at epoch 4" in analysis.reasons[0]


def test_a_non_finite_value_that_recovered_is_reported_but_not_diverging() -> None:
    train = curve(lambda t: math.exp(-t / 20), 30)
    val = [v + 0.05 for v in train]
    val[9] = NAN

    analysis = analyze_loss(history(train, val))

    assert analysis.verdict == "improving"
    assert flag_names(analysis) == {"non_finite": 10}
    assert "finite again" in analysis.flags[0].evidence


def test_a_noisy_descent_oscillates_and_suggests_a_lower_learning_rate() -> None:
    rng = random.Random(7)
    train = curve(lambda t: 2 * math.exp(-t / 80) * (1 + 0.3 * rng.uniform(-1, 1)), 50)
    val = [1.1 * v for v in train]

    analysis = analyze_loss(history(train, val))

    assert analysis.verdict == "improving"
    assert "oscillation" in flag_names(analysis)
    assert analysis.recommendation == "reduce_learning_rate"
    assert analysis.trend is not None and analysis.trend.noise_pct is not None
    assert analysis.trend.noise_pct > 5


def test_a_smooth_descent_does_not_oscillate() -> None:
    analysis = analyze_loss(history(curve(lambda t: 2 * math.exp(-t / 80), 50)))

    assert "oscillation" not in flag_names(analysis)


@pytest.mark.parametrize("epochs", [1, 2])
def test_one_or_two_epochs_are_too_early(epochs: int) -> None:
    analysis = analyze_loss(history([1.0, 0.5][:epochs], [1.2, 0.6][:epochs]))

    assert (analysis.verdict, analysis.recommendation) == ("too_early", "wait_for_more_epochs")
    assert analysis.epochs_analyzed == epochs


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=2))
def test_any_one_or_two_finite_epochs_are_too_early(values: list[float]) -> None:
    analysis = analyze_loss(history(values, values))

    assert analysis.verdict == "too_early"


def test_an_empty_history_is_too_early() -> None:
    analysis = LossAnalyzer().result()

    assert (analysis.verdict, analysis.epochs_analyzed, analysis.best_epoch) == (
        "too_early",
        0,
        None,
    )


# --- monitors: maximised, training-only, custom ------------------------------------------------


def accuracy_run(epochs: int, peak: int | None) -> list[EpochMetrics]:
    points = []
    for t in range(1, epochs + 1):
        drop = 0.01 * (t - peak) if peak is not None and t > peak else 0.0
        points.append(
            EpochMetrics(
                t,
                {
                    "train_loss": math.exp(-t / 10),
                    "train_accuracy": 1 - 0.5 * math.exp(-t / 10),
                    "val_accuracy": 0.9 - 0.4 * math.exp(-t / 10) - drop,
                },
            )
        )
    return points


def test_accuracy_is_maximised_and_its_fall_after_the_peak_is_overfitting() -> None:
    analysis = analyze_loss(accuracy_run(45, peak=25), AnalysisParams(monitor="val_accuracy"))

    assert (analysis.mode, analysis.train_metric) == ("max", "train_accuracy")
    assert analysis.best_epoch == 25
    assert analysis.verdict == "overfitting"
    assert "below its best at epoch 25" in analysis.reasons[0]


def test_rising_accuracy_is_improving() -> None:
    analysis = analyze_loss(accuracy_run(30, peak=None), AnalysisParams(monitor="val_accuracy"))

    assert (analysis.mode, analysis.verdict, analysis.best_epoch) == ("max", "improving", 30)


def test_explicit_mode_overrides_the_name() -> None:
    points = [EpochMetrics(t, {"score": float(t)}) for t in range(1, 8)]

    assert analyze_loss(points, AnalysisParams(monitor="score", mode="max")).best_epoch == 7
    assert analyze_loss(points, AnalysisParams(monitor="score")).best_epoch == 1


def test_a_training_only_run_is_judged_on_train_loss_and_says_so() -> None:
    analysis = analyze_loss(history(curve(lambda t: math.exp(-t / 20), 30)))

    assert (analysis.monitor, analysis.verdict, analysis.best_epoch) == (
        "train_loss",
        "improving",
        30,
    )
    assert analysis.generalization_gap is None
    assert analysis.notes == ["The run has no val_loss values, so train_loss is judged instead."]


def test_validation_every_few_epochs_uses_real_epoch_numbers() -> None:
    train = curve(lambda t: math.exp(-t / 20), 40)
    val = [0.5 + 0.002 * (t - 20) ** 2 if t % 5 == 0 else None for t in range(1, 41)]

    analysis = analyze_loss(history(train, val))

    assert analysis.monitor == "val_loss"
    assert (analysis.best_epoch, analysis.current_epoch, analysis.last_epoch) == (20, 40, 40)
    assert analysis.epochs_since_improvement == 20


def test_a_monitor_no_epoch_reports_is_too_early_and_says_so() -> None:
    analysis = analyze_loss(history([1.0, 0.9, 0.8]), AnalysisParams(monitor="bleu"))

    assert (analysis.verdict, analysis.best_epoch) == ("too_early", None)
    assert analysis.notes == ["No epoch reports bleu."]


# --- input handling ---------------------------------------------------------------------------


def test_unsorted_and_repeated_epochs_are_sorted_and_the_last_repeat_wins() -> None:
    train = curve(lambda t: math.exp(-t / 10), 12)
    ordered = history(train, [v + 0.1 for v in train])
    shuffled = [*ordered[::-1], EpochMetrics(3, {"train_loss": 5.0, "val_loss": 5.0}), ordered[2]]

    assert analyze_loss(shuffled) == analyze_loss(ordered)


def test_the_whole_series_is_analysed_not_a_prefix() -> None:
    train = curve(lambda t: 1.0 + 1000.0 / t, 2000)

    analysis = analyze_loss(history(train))

    assert (analysis.epochs_analyzed, analysis.first_epoch, analysis.last_epoch) == (
        2000,
        1,
        2000,
    )
    assert analysis.best_epoch == 2000


def test_an_epoch_record_converts_to_metrics() -> None:
    record = EpochRecord(
        epoch=3,
        train_loss=0.5,
        learning_rate=0.01,
        epoch_duration_s=1.5,
        samples_per_s=100.0,
        grad_norm=2.0,
        timestamp=0.0,
        val_loss=0.6,
    )

    point = EpochMetrics.from_record(record)

    assert point.epoch == 3
    assert point.values["val_loss"] == 0.6 and "val_accuracy" not in point.values


def test_the_analysis_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, trainer.analysis; print([m for m in ('torch', 'numpy') if m in sys.modules])"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("patience", 0, "patience must be an integer in [1, 10000], got 0"),
        ("window", 2, "window must be an integer in [3, 500], got 2"),
        ("gl_alpha", 0.0, "gl_alpha must be a number in (0, 1000], got 0.0"),
        ("divergence_factor", 1.0, "divergence_factor must be a number in (1, 1000], got 1.0"),
        ("ema_weight", 1.0, "ema_weight must be a number in [0, 0.999], got 1.0"),
        ("min_delta", NAN, "min_delta must be a number in [0, 1e+12], got nan"),
        ("pq_strip_k", 1, "pq_strip_k must be an integer in [2, 100], got 1"),
        ("monitor", " ", "monitor must be a non-empty metric name"),
    ],
)
def test_parameters_out_of_range_are_refused_with_the_field_and_range(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AnalysisParams.model_validate({field: value})

    assert message in str(caught.value)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValidationError, match="patient"):
        AnalysisParams.model_validate({"patient": 3})


def test_parameters_are_echoed_and_publish_their_bounds() -> None:
    params = AnalysisParams(patience=4, window=6)

    analysis = analyze_loss(history([1.0, 0.9, 0.8, 0.7]), params)
    schema = AnalysisParams.model_json_schema()["properties"]

    assert analysis.params == params
    assert (schema["patience"]["minimum"], schema["patience"]["maximum"]) == (1, 10_000)
    assert schema["gl_alpha"]["exclusiveMinimum"] == 0


# --- run summary ------------------------------------------------------------------------------


def test_a_run_summary_has_the_best_validation_loss_final_values_and_time_per_epoch() -> None:
    points = [
        EpochMetrics(1, {"train_loss": 1.0, "val_loss": 0.9, "epoch_duration_s": 2.0}),
        EpochMetrics(2, {"train_loss": 0.5, "val_loss": 0.4, "epoch_duration_s": 4.0}),
        EpochMetrics(3, {"train_loss": 0.3, "val_loss": NAN, "epoch_duration_s": 3.0}),
    ]

    summary = summarize_run(points)

    assert (summary.best_metric, summary.best_value, summary.best_epoch) == ("val_loss", 0.4, 2)
    assert summary.final_values == {"epoch_duration_s": 3.0, "train_loss": 0.3, "val_loss": None}
    assert (summary.mean_epoch_duration_s, summary.total_duration_s) == (3.0, 9.0)
    assert (summary.epochs, summary.first_epoch, summary.last_epoch) == (3, 1, 3)


def test_a_run_summary_without_validation_uses_train_loss() -> None:
    summary = summarize_run(history([1.0, 0.2, 0.3]))

    assert (summary.best_metric, summary.best_epoch, summary.mean_epoch_duration_s) == (
        "train_loss",
        2,
        None,
    )


# --- properties -------------------------------------------------------------------------------

losses = st.one_of(
    st.floats(1e-3, 1e3),
    st.floats(1e-3, 1e3),
    st.floats(1e-3, 1e3),
    st.sampled_from([NAN, INF]),
    st.none(),
)
epochs_st = st.lists(
    st.tuples(st.integers(0, 80), losses, losses, st.floats(0, 1)), min_size=0, max_size=60
)


def from_rows(rows: list[tuple[int, float | None, float | None, float]]) -> list[EpochMetrics]:
    points = []
    for epoch, train, val, acc in rows:
        values = {"val_accuracy": acc}
        if train is not None:
            values["train_loss"] = train
        if val is not None:
            values["val_loss"] = val
        points.append(EpochMetrics(epoch, values))
    return points


def scaled(points: list[EpochMetrics], factor: float) -> list[EpochMetrics]:
    return [
        EpochMetrics(
            p.epoch, {k: v * factor if k.endswith("loss") else v for k, v in p.values.items()}
        )
        for p in points
    ]


def judgement(analysis: LossAnalysis) -> object:
    crit = analysis.criteria
    return (
        analysis.verdict,
        analysis.recommendation,
        analysis.best_epoch,
        [(f.name, f.since_epoch) for f in analysis.flags],
        [(c.fired, c.epoch) for c in (crit.gl, crit.pq, crit.up, crit.patience)],
    )


@given(epochs_st, st.integers(-20, 20))
def test_scaling_losses_by_a_power_of_two_changes_no_flag_or_verdict(
    rows: list[tuple[int, float | None, float | None, float]], exponent: int
) -> None:
    # Multiplying by 2^k is exact in floating point, so every relative quantity is unchanged bit
    # for bit: this isolates the analysis' own scale-invariance from rounding.
    points = from_rows(rows)

    assert judgement(analyze_loss(scaled(points, 2.0**exponent))) == judgement(analyze_loss(points))


@given(
    st.integers(0, 2**32),
    st.sampled_from(["steady", "u", "flat", "noisy", "explode"]),
    st.floats(1e-3, 1e3),
)
@settings(max_examples=60)
def test_scaling_losses_by_any_positive_constant_changes_no_flag_or_verdict(
    seed: int, shape: str, factor: float
) -> None:
    rng = random.Random(seed)
    noise = rng.uniform(0, 0.3) if shape == "noisy" else 0.0

    def f(t: int) -> float:
        base = {
            "steady": math.exp(-t / 20),
            "u": 0.5 + 0.002 * (t - 20) ** 2,
            "flat": 1.0,
            "noisy": math.exp(-t / 50),
            "explode": math.exp(-t / 10) if t < 25 else math.exp(-2.5) * 1.4 ** (t - 25),
        }[shape]
        return base * (1 + noise * rng.uniform(-1, 1))

    train = curve(lambda t: math.exp(-t / 15) * (1 + noise * rng.uniform(-1, 1)), 40)
    points = history(train, curve(f, 40))

    assert judgement(analyze_loss(scaled(points, factor))) == judgement(analyze_loss(points))


@given(epochs_st, st.sampled_from(["val_loss", "train_loss", "val_accuracy"]))
def test_best_epoch_is_always_an_epoch_of_the_input_holding_the_best_value(
    rows: list[tuple[int, float | None, float | None, float]], monitor: str
) -> None:
    points = from_rows(rows)

    analysis = analyze_loss(points, AnalysisParams(monitor=monitor))

    if analysis.best_epoch is not None:
        values = {p.epoch: p.values for p in points}  # the last repeat wins
        assert analysis.best_epoch in values
        best = values[analysis.best_epoch][analysis.monitor]
        assert analysis.best_value == pytest.approx(best, rel=1e-5)
    strict_json(analysis)


@given(epochs_st, st.booleans())
@example(  # the monitor's last value epochs before the last epoch: no future epoch costs nothing
    [(0, None, 1.0, 0.57), (1, None, 1.0, 0.38), (33, 460.2, 1.0, 0.85), (49, None, None, 0.91),
     (2, None, 1.0, 0.97), (3, None, 1.0, 0.3)],
    True,
)  # fmt: skip
def test_incremental_results_equal_the_batch_analysis_of_the_same_points(
    rows: list[tuple[int, float | None, float | None, float]], in_order: bool
) -> None:
    points = from_rows(rows)
    if in_order:
        points = sorted({p.epoch: p for p in points}.values(), key=lambda p: p.epoch)
    analyzer = LossAnalyzer(AnalysisParams(window=5, patience=4, pq_strip_k=3))

    for i, point in enumerate(points):
        analyzer.add(point)
        if i % 7 == 0:
            assert analyzer.result() == analyze_loss(points[: i + 1], analyzer.params)

    assert analyzer.result() == analyze_loss(points, analyzer.params)
