"""Stop decisions on real learning curves: `analyze_loss`'s recommendation against Keras patience.

Run: .venv/bin/python bench/stop_decisions.py   (a few minutes; deterministic: fixed curves)
Replays every curve of `tests/trainer/fixtures/stop_curves.json` (made by
`bench/make_stop_fixture.py`: real trainings, 80 epochs, no early stopping) epoch by epoch into a
real `training-mcp serve --http` on loopback, as an external run with `epochs: 80`, reading
`GET .../analysis` after every epoch. The recommendation's agent stops at the first
`stop_and_restore_best`; the baselines are this project's own `EarlyStopper` (Keras patience 5
and 10 with restore best, Prechelt GL5) on the same values, and never stopping. Two hindsight
rows (no policy can know the future) bound what any rule could do on the same curves.

Regret: the share of the run's achievable improvement (first val_loss down to the hindsight best)
lost by stopping at epoch t and restoring the best epoch seen so far. Prints the table for the
tuning curves and for the held-out curves (a batch trained after the rule was frozen, never tuned
on), then the calibration table of each part (the stop prior behind `confidence` was fitted to
the tuning part): every epoch's recommendation of the replay (continued past the stop), bucketed
by confidence; a stop is right when stopping there loses at most 1%, a continue when continuing
would gain more than 1%.

Frontiers (hindsight, per split): the fewest epochs any choice of one stop epoch per curve can
use at mean regret <= 0.5 % and worst <= 5 % (the issue's absolute goal), once over all epochs and
once over the epochs the hard rules leave (no stop while the smoothed curve improves beyond its
noise, none before a trend shows, a diverging run only after a window: `may_stop`, replayed
in-process through the same analysis code); the hard rules' earliest stops (the fewest epochs any
rule that keeps them can use); and the least mean regret the hard rules allow at the epochs the
recommendation used (how far the rule is from what hindsight could do under the same rules).
Each is a Lagrangian relaxation: for a price lambda every curve takes its own argmin of
epochs + lambda * regret (or regret + lambda * epochs), lambda is bisected until the constraint
holds; the row prints that feasible choice and the dual bound max_lambda [sum over curves of the
minimum - lambda * budget], below which no choice can go. Then the Keras frontier, patience 3-20.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.host_bridge.processes import running, server  # noqa: E402
from trainer.analysis import AnalysisParams  # noqa: E402
from trainer.analysis.decision import StopCall, stop_call  # noqa: E402
from trainer.analysis.engine import Engine, plan_roles  # noqa: E402
from trainer.analysis.prior import RIGHT_WITHIN  # noqa: E402  (regret at most this: right)
from trainer.spec import EarlyStoppingSpec  # noqa: E402
from trainer.stopping import EarlyStopper  # noqa: E402

FIXTURE = ROOT / "tests" / "trainer" / "fixtures" / "stop_curves.json"
API = "/api/v1"
BUCKETS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01))
GOAL_MEAN, GOAL_WORST = 0.005, 0.05  # the absolute goal (with at most 42 % of the epochs)
KERAS_FRONTIER = (3, 4, 5, 6, 7, 8, 10, 12, 15, 20)

Run = dict[str, Any]


def regret(val: list[float], stop: int) -> float:
    """The share of first-to-best improvement lost by stopping after epoch `stop`."""
    best, start = min(val), val[0]
    if start - best <= 0:
        return 0.0
    return (min(val[:stop]) - best) / (start - best)


def _first_within(run: Run, lost: float) -> int:
    val = run["val_loss"]
    return next(t for t in range(1, len(val) + 1) if regret(val, t) <= lost)


def stopper_policy(spec: EarlyStoppingSpec) -> Callable[[Run], int]:
    def stop_epoch(run: Run) -> int:
        stopper = EarlyStopper(spec)
        for epoch, (train, val) in enumerate(
            zip(run["train_loss"], run["val_loss"], strict=True), start=1
        ):
            if stopper.update(epoch, {"val_loss": val, "train_loss": train}).stop:
                return epoch
        return len(run["val_loss"])

    return stop_epoch


def replay(client: httpx.Client, run: Run) -> tuple[int, list[tuple[str, float]]]:
    """Push the curve epoch by epoch; (first stop epoch, every epoch's recommendation)."""
    epochs = len(run["val_loss"])
    created = client.post(
        f"{API}/operations", json={"backend": "external", "name": run["id"], "epochs": epochs}
    )
    created.raise_for_status()
    op = created.json()["operation_id"]
    owner = {"X-Training-Push-Token": created.json()["push_token"]}  # the run's own pushes
    stop, seen = epochs, []
    for epoch, (train, val) in enumerate(
        zip(run["train_loss"], run["val_loss"], strict=True), start=1
    ):
        points = [
            {"name": "train_loss", "step": epoch, "value": train},
            {"name": "val_loss", "step": epoch, "value": val},
        ]
        pushed = client.post(
            f"{API}/operations/{op}/metrics", json={"points": points}, headers=owner
        )
        pushed.raise_for_status()
        analysis = client.get(f"{API}/operations/{op}/analysis")
        analysis.raise_for_status()
        body = analysis.json()
        seen.append((body["recommendation"], body["confidence"]))
        if body["recommendation"] == "stop_and_restore_best" and stop == epochs:
            stop = epoch
    client.post(
        f"{API}/operations/{op}/status", json={"status": "completed"}, headers=owner
    ).raise_for_status()
    return stop, seen


def may_stop(engine: Engine, call: StopCall | None) -> bool:
    """Whether the hard rules let the analysis recommend a stop at the engine's latest epoch: a
    trend has shown, the smoothed curve no longer improves beyond its noise, and a diverging run
    has had a whole window to come back to its best (`report._recommendation`)."""
    if call is None or call.forecast is None or call.improving:
        return False
    best = engine.mon.best
    stall = (engine.last_epoch or 0) - best[0] if best is not None else 0
    return engine.diverging is None or stall >= engine.params.window


def replayed(run: Run) -> Iterator[tuple[int, Engine]]:
    """The analysis engine of `run` after each of its epochs, as a live run's would be."""
    val = run["val_loss"]
    params = AnalysisParams(epochs_total=len(val))
    engine = Engine(params, plan_roles(params, {"train_loss", "val_loss"}))
    for epoch, (train, value) in enumerate(zip(run["train_loss"], val, strict=True), 1):
        engine.step(epoch, {"train_loss": train, "val_loss": value})
        yield epoch, engine


def allowed_stops(run: Run) -> list[int]:
    """The epochs of `run` at which the hard rules allow a stop, and its last epoch."""
    last = len(run["val_loss"])
    return [
        epoch
        for epoch, engine in replayed(run)
        if may_stop(engine, stop_call(engine)) or epoch == last
    ]


Options = list[list[tuple[int, float]]]  # per curve: (stop epoch, its regret), regret falling


def options(runs: list[Run], epochs: Callable[[Run], list[int]], worst: float = 1.0) -> Options:
    out = []
    for run in runs:
        val: list[float] = run["val_loss"]
        kept: list[tuple[int, float]] = []
        for t in epochs(run):
            lost = regret(val, t)
            if lost <= worst and (not kept or lost < kept[-1][1]):
                kept.append((t, lost))
        out.append(kept or [(len(val), 0.0)])
    return out


def _lagrange(
    opts: Options,
    cost: Callable[[tuple[int, float], float], float],
    over: Callable[[list[tuple[int, float]]], bool],
) -> tuple[list[tuple[int, float]], float, float]:
    """Bisect the price until `over(choice)` is False; (choice, low price, high price)."""
    low, high = 0.0, 1e9

    def choice(lam: float) -> list[tuple[int, float]]:
        return [min(o, key=lambda option: (cost(option, lam), option[1])) for o in opts]

    for _ in range(200):
        mid = (low + high) / 2
        if over(choice(mid)):
            low = mid
        else:
            high = mid
    return choice(high), low, high


def fewest_epochs(runs: list[Run], opts: Options, mean_cap: float) -> tuple[str, float]:
    """The fewest-epoch choice with mean regret <= mean_cap: its row, and the dual bound."""
    total, budget = sum(len(r["val_loss"]) for r in runs), mean_cap * len(runs)
    chosen, low, high = _lagrange(
        opts, lambda o, lam: o[0] + lam * o[1], lambda c: sum(g for _, g in c) > budget
    )
    bound = max(
        sum(min(t + lam * g for t, g in o) for o in opts) - lam * budget for lam in (low, high)
    )
    return row("", runs, [t for t, _ in chosen]), bound / total


def least_regret(runs: list[Run], opts: Options, epoch_share: float) -> tuple[str, float]:
    """The least-regret choice using at most epoch_share of the epochs, and the dual bound."""
    total = sum(len(r["val_loss"]) for r in runs)
    budget = epoch_share * total
    chosen, low, high = _lagrange(
        opts, lambda o, lam: o[1] + lam * o[0], lambda c: sum(t for t, _ in c) > budget
    )
    bound = max(
        sum(min(g + lam * t for t, g in o) for o in opts) - lam * budget for lam in (low, high)
    )
    return row("", runs, [t for t, _ in chosen]), bound / len(runs)


def frontier_rows(runs: list[Run], allowed: dict[str, list[int]], ours: float) -> list[str]:
    """The hindsight rows: frontiers over any epoch and over the hard rules' epochs, the hard
    rules' earliest stops, and the least regret they allow at the recommendation's epochs."""

    def every(run: Run) -> list[int]:
        return list(range(1, len(run["val_loss"]) + 1))

    def ruled(run: Run) -> list[int]:
        return allowed[run["id"]]

    out = []
    for name, epochs in (("any epoch", every), ("the hard rules' epochs", ruled)):
        line, bound = fewest_epochs(runs, options(runs, epochs, GOAL_WORST), GOAL_MEAN)
        out.append(
            f"| hindsight frontier over {name}: fewest epochs at mean <= 0.5 %, worst <= 5 % "
            f"(no choice below {100 * bound:.1f} %){line[2:]}"
        )
    earliest = [allowed[run["id"]][0] for run in runs]
    out.append(
        row(
            "the hard rules' earliest stops: every curve stopped where a stop first may be "
            "recommended (no rule that keeps them uses fewer epochs)",
            runs,
            earliest,
        )
    )
    line, bound = least_regret(runs, options(runs, ruled), ours)
    out.append(
        "| hindsight frontier over the hard rules' epochs: least mean regret at the "
        f"recommendation's epochs (no choice below {100 * bound:.2f} %){line[2:]}"
    )
    return out


def row(name: str, runs: list[Run], stops: list[int]) -> str:
    regrets = [regret(r["val_loss"], s) for r, s in zip(runs, stops, strict=True)]
    used = sum(stops) / sum(len(r["val_loss"]) for r in runs)
    over = sum(g > RIGHT_WITHIN for g in regrets)
    return (
        f"| {name} | {100 * used:.1f} % | {100 * statistics.mean(regrets):.2f} % | "
        f"{100 * max(regrets):.1f} % | {over} / {len(runs)} |"
    )


def calibration(runs: list[Run], seen: dict[str, list[tuple[str, float]]]) -> list[str]:
    counts: dict[tuple[str, int], list[int]] = {}
    for run in runs:
        for epoch, (recommendation, confidence) in enumerate(seen[run["id"]], start=1):
            if recommendation not in ("stop_and_restore_best", "continue"):
                continue
            lost = regret(run["val_loss"], epoch)
            right = (
                (lost > RIGHT_WITHIN) if recommendation == "continue" else (lost <= RIGHT_WITHIN)
            )
            bucket = next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= confidence < hi)
            tally = counts.setdefault((recommendation, bucket), [0, 0])
            tally[0] += int(right)
            tally[1] += 1
    lines = ["| recommendation | confidence | epochs | right |", "|---|---|---|---|"]
    for recommendation in ("stop_and_restore_best", "continue"):
        for i, (lo, hi) in enumerate(BUCKETS):
            hits, total = counts.get((recommendation, i), [0, 0])
            if total:
                span = f"[{lo:g}, {min(hi, 1.0):g}{']' if hi > 1 else ')'}"
                lines.append(
                    f"| `{recommendation}` | {span} | {total} | {100 * hits / total:.0f} % |"
                )
    return lines


def main() -> None:
    fixture = json.loads(FIXTURE.read_text())
    runs: list[Run] = fixture["runs"]
    stops: dict[str, int] = {}
    seen: dict[str, list[tuple[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(server(Path(tmp), [])) as (srv,),
        httpx.Client(base_url=srv.url, timeout=30) as client,
    ):
        for run in runs:
            stops[run["id"]], seen[run["id"]] = replay(client, run)
    baselines: dict[str, Callable[[Run], int]] = {
        "Keras patience 5, restore best": stopper_policy(EarlyStoppingSpec(patience=5)),
        "Keras patience 10, restore best": stopper_policy(EarlyStoppingSpec(patience=10)),
        "Prechelt GL5, restore best": stopper_policy(
            EarlyStoppingSpec(patience=None, gl_alpha=5.0)
        ),
        "never stop, restore best": lambda run: len(run["val_loss"]),
        # Hindsight bounds, not policies: what knowing each curve's future would need.
        "hindsight: stop at the best epoch": lambda run: _first_within(run, 0.0),
        "hindsight: first epoch within 0.5 % regret": lambda run: _first_within(run, 0.005),
    }
    allowed = {run["id"]: allowed_stops(run) for run in runs}
    header = "| policy on the same curves | epochs used | mean regret | worst regret | runs > 1 % |"
    print(f"{len(runs)} real curves ({', '.join(fixture['failed'])} failed and are not included)")
    for split in ("tuning", "held_out"):
        part = [r for r in runs if r["split"] == split]
        print(f"\n{split.replace('_', '-')} curves ({len(part)}):\n")
        print(header)
        print("|---|---|---|---|---|")
        print(row("`analyze_loss` recommendation", part, [stops[r["id"]] for r in part]))
        for name, policy in baselines.items():
            print(row(name, part, [policy(r) for r in part]))
        used = sum(stops[r["id"]] for r in part) / sum(len(r["val_loss"]) for r in part)
        print("\n".join(frontier_rows(part, allowed, used)))
        print(f"\nKeras frontier, {split.replace('_', '-')} curves:\n")
        print(header.replace("policy on the same curves", "patience, restore best"))
        print("|---|---|---|---|---|")
        for patience in KERAS_FRONTIER:
            stopper = stopper_policy(EarlyStoppingSpec(patience=patience))
            print(row(str(patience), part, [stopper(r) for r in part]))
    for split in ("tuning", "held_out"):
        part = [r for r in runs if r["split"] == split]
        print(
            f"\ncalibration, {split.replace('_', '-')} curves, every epoch's recommendation "
            "(replayed past the stop):\n"
        )
        print("\n".join(calibration(part, seen)))


if __name__ == "__main__":
    main()
