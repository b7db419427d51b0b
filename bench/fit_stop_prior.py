"""Fit the stop prior (`trainer/analysis/prior.py`) to the tuning curves, and say whether it would
make a better stop rule than the forecast's value rule.

Run: .venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/fit_stop_prior.py
(about a minute; deterministic). Replays every tuning curve of
`tests/trainer/fixtures/stop_curves.json` through the analysis engine and `stop_call` (the code the
server runs), records `stop_features` at every epoch where the run has shown a trend, labelled by
whether stopping there and restoring the best so far loses more than RIGHT_WITHIN of the run's
improvement (first value to the hindsight best), and fits a logistic regression
(scikit-learn, L2, C=1). Prints:

1. 5-fold cross-validated policies, curves split by curve: the value rule at several GAIN_PRICEs
   against "stop when the prior's risk is below a threshold" and both together, so one sees
   whether the prior earns a place in the stop rule (on the curves of 2026-12-02 it did not: the
   value rule at GAIN_PRICE 1 was as good as any learned rule out of sample);
2. the cross-validated calibration of the prior as the analysis' confidence;
3. the weights fitted to all tuning curves, as the Python constants `prior.py` ships.

The held-out part of the fixture is never read here.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stop_decisions import may_stop, regret, replayed  # noqa: E402
from trainer.analysis.decision import GAIN_PRICE, stop_call  # noqa: E402
from trainer.analysis.prior import FEATURES, RIGHT_WITHIN  # noqa: E402

FIXTURE = ROOT / "tests" / "trainer" / "fixtures" / "stop_curves.json"
FOLDS = 5
BUCKETS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01))

Row = dict[str, Any]


def replay(run: dict[str, Any]) -> list[Row]:
    """Every epoch: the features (None before a trend shows), whether a stop may be
    recommended there at all (the hard rules), the value rule's worth and the regret."""
    rows = []
    for epoch, engine in replayed(run):
        call = stop_call(engine)
        rows.append(
            {
                "x": call.features if call is not None else None,
                "may_stop": may_stop(engine, call),
                "value": call.value if call is not None else None,
                "regret": regret(run["val_loss"], epoch),
            }
        )
    return rows


def first_stop(rows: list[Row], stop: Callable[[Row, float], bool], risks: list[float]) -> int:
    for epoch, (row, risk) in enumerate(zip(rows, risks, strict=True), 1):
        if row["may_stop"] and stop(row, risk):
            return epoch
    return len(rows)


def main() -> None:
    linear_model = importlib.import_module("sklearn.linear_model")
    runs = [r for r in json.loads(FIXTURE.read_text())["runs"] if r["split"] == "tuning"]
    replays = {r["id"]: replay(r) for r in runs}
    ids = [r["id"] for r in runs]
    fold = {run_id: i % FOLDS for i, run_id in enumerate(ids)}

    def fit(train_ids: list[str]) -> Any:
        xs = [row["x"] for i in train_ids for row in replays[i] if row["x"] is not None]
        ys = [
            row["regret"] > RIGHT_WITHIN
            for i in train_ids
            for row in replays[i]
            if row["x"] is not None
        ]
        return linear_model.LogisticRegression(C=1.0, max_iter=5000).fit(xs, ys)

    risks: dict[str, list[float]] = {}
    for k in range(FOLDS):
        model = fit([i for i in ids if fold[i] != k])
        for i in ids:
            if fold[i] == k:
                xs = [row["x"] or [0.0] * len(FEATURES) for row in replays[i]]
                risks[i] = [float(p) for p in model.predict_proba(xs)[:, 1]]

    def score(stop: Callable[[Row, float], bool]) -> str:
        stops = [first_stop(replays[i], stop, risks[i]) for i in ids]
        regrets = [replays[i][s - 1]["regret"] for i, s in zip(ids, stops, strict=True)]
        used = sum(stops) / sum(len(replays[i]) for i in ids)
        return (
            f"{100 * used:.1f} % | {100 * statistics.mean(regrets):.2f} % | "
            f"{100 * max(regrets):.1f} %"
        )

    def worth_below(price: float) -> Callable[[Row, float], bool]:
        return lambda row, _: row["value"] is None or row["value"] < price

    print(f"{len(ids)} tuning curves, {FOLDS}-fold cross-validated by curve\n")
    print("| stop rule | epochs used | mean regret | worst regret |\n|---|---|---|---|")
    for price in (0.5, 1.0, 2.0, 4.0):
        shipped = " (shipped)" if price == GAIN_PRICE else ""
        print(f"| worth < {price:g}{shipped} | {score(worth_below(price))} |")

    def risk_below(threshold: float, price: float | None) -> Callable[[Row, float], bool]:
        def stop(row: Row, risk: float) -> bool:
            return risk < threshold and (price is None or worth_below(price)(row, risk))

        return stop

    for threshold in (0.1, 0.2, 0.3, 0.5, 0.7):
        print(f"| prior risk < {threshold:g} | {score(risk_below(threshold, None))} |")
        print(f"| worth < 2 and prior risk < {threshold:g} | {score(risk_below(threshold, 2.0))} |")
    print("\ncalibration of the prior (cross-validated): epochs with a shown trend, by risk\n")
    print("| 1 - risk (a stop's confidence) | epochs | stopping loses <= 1 % |\n|---|---|---|")
    tally = [[0, 0] for _ in BUCKETS]
    for i in ids:
        for row, risk in zip(replays[i], risks[i], strict=True):
            if row["x"] is not None:
                bucket = next(b for b, (lo, hi) in enumerate(BUCKETS) if lo <= 1 - risk < hi)
                tally[bucket][0] += row["regret"] <= RIGHT_WITHIN
                tally[bucket][1] += 1
    for (lo, hi), (right, total) in zip(BUCKETS, tally, strict=True):
        if total:
            print(f"| [{lo:g}, {min(hi, 1.0):g}) | {total} | {100 * right / total:.0f} % |")
    model = fit(ids)
    print("\n# constants for trainer/analysis/prior.py (fitted to all tuning curves):")
    weights = ", ".join(f"{w:.4g}" for w in model.coef_[0])
    print(f"_WEIGHTS = ({weights})")
    print(f"_INTERCEPT = {model.intercept_[0]:.4g}")
    for name, weight in zip(FEATURES, model.coef_[0], strict=True):
        print(f"#   {name}: {weight:+.3f}")


if __name__ == "__main__":
    main()
