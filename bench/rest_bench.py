"""REST mirror benchmark: metric writes and reads against the real server over loopback.

Run: .venv/bin/python bench/rest_bench.py
Starts `training-mcp serve --http` in a subprocess (a temporary data dir, a free loopback port)
and drives it with httpx over kept-alive connections. Prints each figure with its target (issue 6:
an order of magnitude better than the MLflow tracking server measured on the same kind of machine)
and, where it makes sense, the ratio to a naive way of doing the same thing measured in this run.
Every loop is bounded; the whole run takes about half a minute.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate", "grad_norm")
API = "/api/v1"
PUSH_TOKEN_HEADER = "X-Training-Push-Token"  # host_bridge.protocol.PUSH_TOKEN_HEADER


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, "-m", "mcp_server.cli", "serve", "--http", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-level", "warning"]
    env = {**os.environ, "TRAINING_MCP_TOKEN": ""}
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a benchmark may poll; tests wait on events instead
        try:
            if httpx.get(f"{base}{API}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not start within 60 s")


def _epoch(epoch: int) -> dict[str, list[dict[str, float | int | str]]]:
    return {
        "points": [
            {"name": m, "step": epoch, "epoch": epoch, "value": 1.0 / epoch + i}
            for i, m in enumerate(METRICS)
        ]
    }


def _new_run(http: httpx.Client) -> str:
    response = http.post(f"{API}/operations", json={"backend": "external", "name": "bench"})
    response.raise_for_status()
    operation_id: str = response.json()["operation_id"]
    http.headers[PUSH_TOKEN_HEADER] = response.json()["push_token"]  # pushes go to the newest
    return operation_id


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


@dataclass
class Row:
    figure: str
    measured: float
    unit: str
    target: str
    ok: bool
    baseline: str = ""

    def cells(self) -> list[str]:
        value = f"{self.measured:,.0f}" if self.measured >= 100 else f"{self.measured:.2f}"
        return [self.figure, f"{value} {self.unit}", self.target, "yes" if self.ok else "NO"]


def _post_ok(http: httpx.Client, url: str, body: object) -> None:
    response = http.post(url, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")


def _epoch_writes(http: httpx.Client) -> tuple[Row, str]:
    operation_id = _new_run(http)
    url = f"{API}/operations/{operation_id}/metrics"
    epochs = iter(range(1, 101))
    latencies = _timed(lambda: _post_ok(http, url, _epoch(next(epochs))), 100)
    one_by_one = _new_run(http)
    single_url = f"{API}/operations/{one_by_one}/metrics"
    started = time.perf_counter()
    for epoch in range(1, 101):
        for point in _epoch(epoch)["points"]:
            _post_ok(http, single_url, {"points": [point]})
    per_epoch_singly = (time.perf_counter() - started) * 1000 / 100
    p99 = _p(latencies, 0.99)
    row = Row(
        "6-metric POST per epoch, 100 epochs, kept alive: p99",
        p99,
        "ms",
        "<= 5 ms (MLflow 15-56)",
        p99 <= 5,
        f"p50 {_p(latencies, 0.5):.2f} ms; the same 6 points as 6 POSTs: "
        f"{per_epoch_singly:.2f} ms per epoch ({per_epoch_singly / _p(latencies, 0.5):.1f}x)",
    )
    return row, operation_id


def _batch_ingest(http: httpx.Client) -> tuple[Row, str]:
    operation_id = _new_run(http)
    url = f"{API}/operations/{operation_id}/metrics"
    batches = [
        {"points": [{"name": "m", "step": b * 1000 + i, "value": math.sin(i)} for i in range(1000)]}
        for b in range(20)
    ]
    started = time.perf_counter()
    for body in batches:
        _post_ok(http, url, body)
    rate = 20_000 / (time.perf_counter() - started)
    single = _new_run(http)
    single_url = f"{API}/operations/{single}/metrics"
    started = time.perf_counter()
    for step in range(500):
        _post_ok(http, single_url, {"points": [{"name": "m", "step": step, "value": 1.0}]})
    single_rate = 500 / (time.perf_counter() - started)
    row = Row(
        "batch ingest, 1,000 points per request",
        rate,
        "points/s",
        ">= 50,000 (MLflow ~5,000)",
        rate >= 50_000,
        f"one point per request: {single_rate:,.0f} points/s ({rate / single_rate:.0f}x)",
    )
    return row, operation_id


async def _concurrent_writers(base: str, writers: int, epochs: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=writers, max_keepalive_connections=writers)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        runs, tokens = [], {}
        for _ in range(writers):
            response = await http.post(f"{API}/operations", json={"backend": "external"})
            runs.append(response.json()["operation_id"])
            tokens[runs[-1]] = {PUSH_TOKEN_HEADER: response.json()["push_token"]}

        async def writer(operation_id: str) -> None:
            url = f"{API}/operations/{operation_id}/metrics"
            for epoch in range(1, epochs + 1):
                t = time.perf_counter()
                response = await http.post(url, json=_epoch(epoch), headers=tokens[operation_id])
                latencies.append((time.perf_counter() - t) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(response.text[:200])

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for operation_id in runs:
                tg.start_soon(writer, operation_id)
        elapsed = time.perf_counter() - started
    return writers * epochs / elapsed, latencies


def _concurrency(base: str) -> list[Row]:
    rate, latencies = anyio.run(_concurrent_writers, base, 8, 100)
    single_rate, _ = anyio.run(_concurrent_writers, base, 1, 200)
    p99 = _p(latencies, 0.99)
    return [
        Row(
            "8 concurrent writers (6-metric POSTs)",
            rate,
            "requests/s",
            ">= 750 (MLflow 70-75)",
            rate >= 750,
            f"one writer alone: {single_rate:,.0f} requests/s ({rate / single_rate:.1f}x)",
        ),
        Row(
            "8 concurrent writers: p99 latency",
            p99,
            "ms",
            "<= 50 ms (MLflow 600-1,200)",
            p99 <= 50,
            f"p50 {_p(latencies, 0.5):.2f} ms",
        ),
    ]


def _reads(http: httpx.Client, hundred_epochs: str, big: str) -> list[Row]:
    url = f"{API}/operations/{hundred_epochs}/metrics"
    params = httpx.QueryParams(metrics="all", max_points=100)
    _timed(lambda: http.get(url, params=params).raise_for_status(), 20)
    history = _timed(lambda: http.get(url, params=params).raise_for_status(), 300)
    one = f"{API}/operations/{hundred_epochs}"
    state = _timed(lambda: http.get(one).raise_for_status(), 300)
    big_url = f"{API}/operations/{big}/metrics"
    small = httpx.QueryParams(metrics="m", max_points=500)
    _timed(lambda: http.get(big_url, params=small).raise_for_status(), 5)
    downsampled = _timed(lambda: http.get(big_url, params=small).raise_for_status(), 100)
    whole = httpx.QueryParams(metrics="m", max_points=10_000, last_epochs=10_000)
    last_10k = _timed(lambda: http.get(big_url, params=whole).raise_for_status(), 20)
    return [
        Row(
            "read 100 epochs of 6 metrics: p99",
            _p(history, 0.99),
            "ms",
            "<= 5 ms (MLflow 15-56)",
            _p(history, 0.99) <= 5,
            f"p50 {_p(history, 0.5):.2f} ms; GET one operation: p50 {_p(state, 0.5):.2f} ms",
        ),
        Row(
            "20,000-point metric downsampled to 500: p99",
            _p(downsampled, 0.99),
            "ms",
            "<= 20 ms",
            _p(downsampled, 0.99) <= 20,
            f"p50 {_p(downsampled, 0.5):.2f} ms; its last 10,000 points whole: "
            f"p50 {_p(last_10k, 0.5):.2f} ms ({_p(last_10k, 0.5) / _p(downsampled, 0.5):.1f}x)",
        ),
    ]


def _print(rows: list[Row]) -> None:
    header = ["figure", "measured", "target", "met"]
    table = [header, *[r.cells() for r in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("same-run comparisons:")
    for r in rows:
        if r.baseline:
            print(f"- {r.figure}: {r.baseline}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server, base = _start_server(Path(tmp))
        try:
            with httpx.Client(base_url=base, timeout=30) as http:
                epoch_row, hundred_epochs = _epoch_writes(http)
                batch_row, big = _batch_ingest(http)
                rows = [epoch_row, batch_row, *_concurrency(base)]
                rows += _reads(http, hundred_epochs, big)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"REST mirror over loopback ({os.cpu_count()} CPUs, SQLite in a temporary directory)\n")
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
