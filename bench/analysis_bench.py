"""Loss analysis benchmark: cost of one incremental update against a full recomputation.

Run: .venv/bin/python bench/analysis_bench.py
Prints a table: `LossAnalyzer.add` + `result()` as epochs 901-1,000 of a 1,000-epoch run arrive
(p50/p99 over several runs), the same update done by calling `analyze_loss` on the whole history,
and their ratio, all measured in the same run. Target: <= 1 ms per incremental update.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from mcp_server.config import ServerConfig
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import open_service
from trainer.analysis import EpochMetrics, LossAnalyzer, analyze_loss

EPOCHS = 1_000
MEASURED = 100  # the last epochs of each run, when the history is ~1,000 epochs long
RUNS = 10
FULL_REPEATS = 30


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _history(seed: int) -> list[EpochMetrics]:
    """A realistic run: every per-epoch field the loop emits, noisy losses, mild overfitting."""
    rng = random.Random(seed)
    points = []
    for t in range(1, EPOCHS + 1):
        train = 0.05 + math.exp(-t / 150) * (1 + 0.05 * rng.gauss(0, 1))
        val = 0.2 + math.exp(-t / 150) + 2e-7 * max(0, t - 400) ** 2 + 0.01 * rng.gauss(0, 1)
        points.append(
            EpochMetrics(
                t,
                {
                    "train_loss": train,
                    "val_loss": val,
                    "train_accuracy": 1 - train / 2,
                    "val_accuracy": 1 - val / 2,
                    "learning_rate": 1e-3 * 0.5 ** (t // 300),
                    "epoch_duration_s": 1.0 + 0.1 * rng.random(),
                    "samples_per_s": 5_000.0,
                    "grad_norm": 1.0 + rng.random(),
                },
            )
        )
    return points


async def _pushed(parts: bool) -> dict[int, list[float]]:
    """ms for one pushed epoch (train_loss and val_loss, in one request or in two) followed by
    the analysis, through the service as the REST route calls it, at epochs ~100 and ~1,000."""
    measured = {100: list(range(91, 101)), 1000: list(range(991, 1001))}
    costs: dict[int, list[float]] = {k: [] for k in measured}
    points = _history(1)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_service(ServerConfig(data_dir=Path(tmp))) as service:
            args = StartTrainingArgs.model_validate({"backend": "external"})
            started = await service.start_training(args)
            op, token = started.operation_id, started.push_token
            for point in points:
                batch = [
                    {"name": n, "step": point.epoch, "value": point.values[n]}
                    for n in ("train_loss", "val_loss")
                ]
                t = time.perf_counter()
                for request in [batch[:1], batch[1:]] if parts else [batch]:
                    await service.push_metrics(op, request, token)
                await service.analyze(op)
                for key, epochs in measured.items():
                    if point.epoch in epochs:
                        costs[key].append((time.perf_counter() - t) * 1000)
    return costs


def main() -> None:
    incremental: list[float] = []
    for run in range(RUNS):
        points = _history(run)
        analyzer = LossAnalyzer()
        for point in points[: EPOCHS - MEASURED]:
            analyzer.add(point)
        for point in points[EPOCHS - MEASURED :]:
            t = time.perf_counter()
            analyzer.add(point)
            analyzer.result()
            incremental.append((time.perf_counter() - t) * 1000)

    points = _history(0)
    full: list[float] = []
    for _ in range(FULL_REPEATS):
        t = time.perf_counter()
        analyze_loss(points)
        full.append((time.perf_counter() - t) * 1000)

    late = LossAnalyzer()
    for point in points:
        late.add(point)
    rebuild: list[float] = []
    for epoch in range(500, 500 + 10):  # an old epoch re-sent: replay of the stored history
        t = time.perf_counter()
        late.add(points[epoch - 1])
        late.result()
        rebuild.append((time.perf_counter() - t) * 1000)

    inc50, full50 = statistics.median(incremental), statistics.median(full)
    rows = [
        (
            "incremental add + result, 1,000 epochs",
            f"p50 {inc50:.3f} ms, p99 {_p(incremental, 0.99):.3f} ms",
            "p99 <= 1 ms",
            f"{full50 / inc50:,.0f}x cheaper than analyze_loss",
        ),
        (
            "analyze_loss, 1,000 epochs (recompute)",
            f"p50 {full50:.1f} ms, p99 {_p(full, 0.99):.1f} ms",
            "",
            "",
        ),
        (
            "old epoch re-sent (replay), 1,000 epochs",
            f"p50 {statistics.median(rebuild):.1f} ms",
            "",
            "rare path: out-of-order or repeated epoch",
        ),
    ]
    for parts in (False, True):
        costs = anyio.run(_pushed, parts)
        at100, at1000 = statistics.median(costs[100]), statistics.median(costs[1000])
        how = "in two parts" if parts else "whole"
        rows.append(
            (
                f"pushed epoch ({how}) + analysis, epoch 100",
                f"p50 {at100:.2f} ms",
                "",
                "service path, SQLite file",
            )
        )
        rows.append(
            (
                f"pushed epoch ({how}) + analysis, epoch 1,000",
                f"p50 {at1000:.2f} ms",
                "<= 2x epoch 100",
                f"{at1000 / at100:.2f}x epoch 100",
            )
        )
    header = ("figure", "measured", "target", "same-run comparison")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
