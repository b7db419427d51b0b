"""The stop prior behind `confidence`, and the stop of a diverged run: on made-up curves and on the
real curves of tests/trainer/fixtures/stop_curves.json."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from trainer.analysis import AnalysisParams, EpochMetrics, analyze_loss
from trainer.analysis.decision import stop_call
from trainer.analysis.engine import Engine, plan_roles
from trainer.analysis.prior import FEATURES, RIGHT_WITHIN, stop_risk
from trainer.analysis.report import Report

FIXTURE = Path(__file__).parent / "fixtures" / "stop_curves.json"
BUCKETS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01))


def held_out() -> list[dict[str, Any]]:
    return [r for r in json.loads(FIXTURE.read_text())["runs"] if r["split"] == "held_out"]


def regret(val: list[float], stop: int) -> float:
    best, start = min(val), val[0]
    return 0.0 if start <= best else (min(val[:stop]) - best) / (start - best)


def test_a_diverged_run_is_stopped_after_a_window_without_its_best() -> None:
    rng = random.Random(0)
    # Falls to its best at epoch 10, then both losses jump tenfold and stay there.
    val = [1.0 - 0.05 * t + 0.01 * rng.random() for t in range(10)]
    val += [5.0 + 0.05 * rng.random() for _ in range(12)]
    train = [0.9 - 0.05 * t for t in range(10)] + [4.0 + 0.05 * rng.random() for _ in range(12)]

    def at(epochs: int) -> Any:
        history = [
            EpochMetrics(i + 1, {"train_loss": train[i], "val_loss": val[i]}) for i in range(epochs)
        ]
        return analyze_loss(history, AnalysisParams(epochs_total=40))

    looked = at(19)  # 9 epochs since the best: look at it first
    stopped = at(20)  # a whole window (10) since the best, nothing worth the epochs ahead

    assert (looked.verdict, looked.recommendation) == ("diverging", "investigate_divergence")
    assert (stopped.verdict, stopped.recommendation) == ("diverging", "stop_and_restore_best")
    assert stopped.best_epoch == 10
    assert "divergence" in {flag.name for flag in stopped.flags}
    assert "rose from" in stopped.reasons[0]


def test_confidence_is_the_prior_and_its_features_stay_in_their_bounds() -> None:
    seen = set()
    for run in held_out()[::10]:
        params = AnalysisParams(epochs_total=len(run["val_loss"]))
        engine = Engine(params, plan_roles(params, {"train_loss", "val_loss"}))
        for epoch, (train, val) in enumerate(zip(run["train_loss"], run["val_loss"], strict=True)):
            engine.step(epoch + 1, {"train_loss": train, "val_loss": val})
            call = stop_call(engine)
            analysis = Report(engine).build()
            if call is None or call.features is None or call.risk is None:
                continue
            assert len(call.features) == len(FEATURES)
            assert all(-10.0 <= x <= 12.0 for x in call.features), (run["id"], call.features)
            assert 0.0 < call.risk == stop_risk(call.features) < 1.0
            if analysis.recommendation == "stop_and_restore_best":
                assert analysis.confidence == round(1.0 - call.risk, 3)
            elif analysis.recommendation == "continue":
                assert analysis.confidence == round(call.risk, 3)
            seen.add(analysis.recommendation)
    assert {"stop_and_restore_best", "continue"} <= seen


def test_on_held_out_curves_a_higher_confidence_is_right_more_often() -> None:
    # Every epoch's recommendation (replayed past the stop), bucketed by confidence as the bench
    # does: a stop is right when it loses at most 1 %, a continue when stopping would lose more.
    tally: dict[tuple[str, int], list[int]] = {}
    for run in held_out():
        val = run["val_loss"]
        params = AnalysisParams(epochs_total=len(val))
        engine = Engine(params, plan_roles(params, {"train_loss", "val_loss"}))
        for epoch, train in enumerate(run["train_loss"], 1):
            engine.step(epoch, {"train_loss": train, "val_loss": val[epoch - 1]})
            analysis = Report(engine).build()
            recommendation = analysis.recommendation
            if recommendation not in ("stop_and_restore_best", "continue"):
                continue
            lost = regret(val, epoch) > RIGHT_WITHIN
            right = lost if recommendation == "continue" else not lost
            bucket = next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= analysis.confidence < hi)
            counts = tally.setdefault((recommendation, bucket), [0, 0])
            counts[0] += int(right)
            counts[1] += 1
    for recommendation in ("stop_and_restore_best", "continue"):
        rates = [
            tally[(recommendation, b)][0] / tally[(recommendation, b)][1]
            for b in range(len(BUCKETS))
            if tally.get((recommendation, b), [0, 0])[1] >= 30
        ]
        assert len(rates) == len(BUCKETS), (recommendation, tally)
        assert rates == sorted(rates), (recommendation, rates)
        # and the most confident calls (0.95 and up) are right at least 90 % of the time
        assert rates[-1] >= 0.9, (recommendation, rates)
