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
tuning curves and for the held-out curves (a batch trained after the rule was tuned, never
tuned on), then the calibration table: every
epoch's recommendation of the replay (continued past the stop), bucketed by confidence; a stop is
right when stopping there loses at most 1%, a continue when continuing would gain more than 1%.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.host_bridge.processes import running, server  # noqa: E402
from trainer.spec import EarlyStoppingSpec  # noqa: E402
from trainer.stopping import EarlyStopper  # noqa: E402

FIXTURE = ROOT / "tests" / "trainer" / "fixtures" / "stop_curves.json"
API = "/api/v1"
RIGHT_WITHIN = 0.01  # regret at most this: stopping was right
BUCKETS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01))

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
    print(f"{len(runs)} real curves ({', '.join(fixture['failed'])} failed and are not included)")
    for split in ("tuning", "held_out"):
        part = [r for r in runs if r["split"] == split]
        print(f"\n{split.replace('_', '-')} curves ({len(part)}):\n")
        print(
            "| policy on the same curves | epochs used | mean regret | worst regret | runs > 1 % |"
        )
        print("|---|---|---|---|---|")
        print(row("`analyze_loss` recommendation", part, [stops[r["id"]] for r in part]))
        for name, policy in baselines.items():
            print(row(name, part, [policy(r) for r in part]))
    print("\ncalibration, all curves, every epoch's recommendation (replayed past the stop):\n")
    print("\n".join(calibration(runs, seen)))


if __name__ == "__main__":
    main()
