"""MCP server benchmark: notification latency, tool latency under training load, start-up time.

Run: .venv/bin/python bench/mcp_bench.py
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from mcp_server.config import ServerConfig
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import TrainingService, open_service
from mcp_server.server import build_mcp_server

ROOT = Path(__file__).resolve().parents[1]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _epoch(epoch: int) -> list[dict[str, float | int | str]]:
    values = {"train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "learning_rate": 1e-3}
    return [{"name": k, "step": epoch, "value": v} for k, v in values.items()]


async def notify_latency(service: TrainingService, client: Client, epochs: int) -> list[float]:
    """Push an epoch; time until the client's subscription yields its update."""
    started_run = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external", "name": "bench"})
    )
    uri = f"training://operations/{started_run.operation_id}/metrics"
    latencies: list[float] = []
    async with client.listen(resource_subscriptions=[uri]) as events:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    service.push_metrics,
                    started_run.operation_id,
                    _epoch(epoch),
                    started_run.push_token,
                )
                await events.__anext__()
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def tool_latency_under_load(service: TrainingService, client: Client) -> list[float]:
    ids = []
    for _ in range(2):
        run = await client.call_tool("start_training", {"epochs": 100_000})
        assert run.structured_content is not None
        ids.append(run.structured_content["operation_id"])
    for op in ids:
        await client.call_tool("wait_for_operation", {"operation_id": op, "until": "next_epoch"})
    latencies = []
    for i in range(200):
        started = time.perf_counter()
        tool = ("get_operation", "get_operation_metrics")[i % 2]
        result = await client.call_tool(tool, {"operation_id": ids[i % 2]})
        assert not result.is_error
        latencies.append((time.perf_counter() - started) * 1000)
    for op in ids:
        await client.call_tool("stop_training", {"operation_id": op})
    return latencies


async def stdio_start(data_dir: Path) -> float:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server.cli", "serve", "--data-dir", str(data_dir), "--log-level", "ERROR"],
        cwd=str(ROOT),
    )
    started = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        await client.list_tools()
        return time.perf_counter() - started


def _import_torch_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


async def main() -> None:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(data_dir=Path(tmp) / "data")
        async with open_service(config) as service, Client(build_mcp_server(service)) as client:
            ms = await notify_latency(service, client, 200)
            rows.append(
                (
                    "epoch pushed -> subscriber notified",
                    f"p50 {_p(ms, 0.5):.1f} ms, p99 {_p(ms, 0.99):.1f} ms",
                    "p99 <= 20 ms",
                    "in-process client, includes the SQLite write",
                )
            )
            idle: list[float] = []
            for _ in range(100):
                started = time.perf_counter()
                await client.call_tool("list_operations", {"limit": 5})
                idle.append((time.perf_counter() - started) * 1000)
            busy = await tool_latency_under_load(service, client)
            rows.append(
                (
                    "tool call while 2 runs train",
                    f"p50 {_p(busy, 0.5):.1f} ms, p99 {_p(busy, 0.99):.1f} ms",
                    "p99 <= 50 ms",
                    f"{_p(busy, 0.5) / _p(idle, 0.5):.1f}x idle p50 ({_p(idle, 0.5):.1f} ms)",
                )
            )
        starts = [await stdio_start(Path(tmp) / f"s{i}") for i in range(3)]
        torch_s = _import_torch_s()
        rows.append(
            (
                "server start -> tools/list (stdio)",
                f"median {sorted(starts)[1]:.2f} s",
                "<= 3 s",
                f"{sorted(starts)[1] / torch_s:.2f}x a bare 'import torch' ({torch_s:.2f} s)",
            )
        )
    header = ("figure", "measured", "target", "same-run comparison")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    anyio.run(main)
