"""Storage benchmark: size per stored point, append throughput, read latencies.

Run: .venv/bin/python bench/storage_bench.py
Prints a table with each figure, its target, and where a baseline makes sense the ratio to a naive
way of doing the same thing, measured in the same run.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from storage import Backend, Database, append_points, connect, create_operation, read_metrics
from storage.metrics import downsample_rows

METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate", "grad_norm")


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _size_per_run(root: Path) -> float:
    path = root / "size.db"
    async with connect(f"sqlite+aiosqlite:///{path}") as db:
        await _checkpoint(db)
        before = _file_bytes(path)
        runs = 20
        for _ in range(runs):
            op = await create_operation(db, name="bench", backend=Backend.EXTERNAL, spec={})
            for epoch in range(1, 101):  # one POST-sized batch per epoch, as a run writes
                pts = [
                    {"name": m, "step": epoch, "epoch": epoch, "value": 1.0 / epoch + i}
                    for i, m in enumerate(METRICS)
                ]
                await append_points(db, op.operation_id, pts)
        await _checkpoint(db)
        return (_file_bytes(path) - before) / runs


async def _checkpoint(db: Database) -> None:
    async with db.write() as conn:
        await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


async def main() -> None:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        growth = await _size_per_run(root)
        rows.append(
            (
                "db growth, 100 epochs x 6 metrics",
                f"{growth / 1024:.1f} KB",
                "<= 20 KB",
                f"{growth / 600:.0f} B/point (MLflow ~232)",
            )
        )
        async with connect(f"sqlite+aiosqlite:///{root / 'bench.db'}") as db:
            op = await create_operation(db, name="b", backend=Backend.EXTERNAL, spec={})
            oid = op.operation_id
            batches = [
                [{"name": "loss", "step": b * 1000 + i, "value": math.sin(i)} for i in range(1000)]
                for b in range(100)
            ]
            t = time.perf_counter()
            for batch in batches:
                await append_points(db, oid, batch)
            rate = 100_000 / (time.perf_counter() - t)
            single = [{"name": "one", "step": i, "value": 1.0} for i in range(1000)]
            t = time.perf_counter()
            for p in single:
                await append_points(db, oid, [p])
            single_rate = 1000 / (time.perf_counter() - t)
            rows.append(
                (
                    "append, batches of 1,000",
                    f"{rate:,.0f} pts/s",
                    ">= 100,000 pts/s",
                    f"{rate / single_rate:.0f}x one point per call ({single_rate:,.0f}/s)",
                )
            )

            run = await create_operation(db, name="e", backend=Backend.EXTERNAL, spec={})
            pts = [
                {"name": m, "step": e, "epoch": e, "value": 1.0 / e}
                for e in range(1, 101)
                for m in METRICS
            ]
            await append_points(db, run.operation_id, pts)
            ms = await _timed(lambda: read_metrics(db, run.operation_id), 300)
            rows.append(
                (
                    "read 100 epochs, all 6 metrics",
                    f"p50 {_p(ms, 0.5):.2f} ms, p99 {_p(ms, 0.99):.2f} ms",
                    "p99 <= 2 ms",
                    "",
                )
            )

            async def naive() -> object:
                full = (await read_metrics(db, oid, names=["loss"])).series[0]
                rows_ = [(s, v, 0) for s, v in zip(full.steps, full.values, strict=True)]
                return downsample_rows(rows_, 500, nonfinite=False)

            ds = await _timed(lambda: read_metrics(db, oid, names=["loss"], max_points=500), 50)
            nv = await _timed(naive, 10)
            rows.append(
                (
                    "100,000-pt metric -> 500 pts",
                    f"p50 {_p(ds, 0.5):.1f} ms, p99 {_p(ds, 0.99):.1f} ms",
                    "p99 <= 20 ms",
                    f"{statistics.median(nv) / statistics.median(ds):.1f}x faster than "
                    f"read-all + downsample ({statistics.median(nv):.0f} ms)",
                )
            )
    widths = [
        max(len(r[i]) for r in [*rows, ("figure", "measured", "target", "ratio")]) for i in range(4)
    ]
    header = ("figure", "measured", "target", "same-run comparison")
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    anyio.run(main)
