"""Host bridge benchmark: how fast an epoch gets from a bridge to the server; what pushing costs.

1. Latency, loopback: a bridge session (the bridge's own `SessionManager`, run in this process so
   its requests can be timed) pushes a run of many short CPU epochs to a real
   `training-mcp serve --http` process. From each epoch's end (its record's timestamp, sent as the
   points' wall time) to the server's answer that it stored them. Target: p99 <= 50 ms.
2. Overhead: the same spec (~5 epochs of a few hundred ms, a step loss every 10 batches,
   checkpoints each epoch) trained by `run_training` in a thread with a sink that sends nothing,
   and by a bridge session pushing everything (the spool, the reporter, heartbeats) to the real
   server process: wall time from the session's started_at to its finished_at, and this
   process's CPU until the server has everything. A second bare run per round is the control:
   its ratio is the noise floor of the machine. The order rotates every round, so drift in the
   machine's load hits all alike. Target: median wall ratio <= 1.01.

Usage: python bench/bridge_bench.py [--epochs 200] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_bridge.protocol import SessionRequest  # noqa: E402
from host_bridge.service import SWITCH_INTERVAL_S  # noqa: E402
from host_bridge.sessions import BridgeOptions, SessionManager  # noqa: E402
from trainer.preflight import TrainerOptions  # noqa: E402
from trainer.records import EpochRecord, StepRecord  # noqa: E402
from trainer.spec import TrainingSpec  # noqa: E402

TOKEN = "bench-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@contextmanager
def _process(args: list[str], health: str, log: Path) -> Iterator[None]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@contextmanager
def server_and_bridge(tmp: Path) -> Iterator[tuple[str, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    bridge_url = f"http://127.0.0.1:{_port()}"
    server_url = f"http://127.0.0.1:{_port()}"
    bridge_args = ["bridge", "--port", bridge_url.rsplit(":", 1)[1], "--token", TOKEN]
    bridge_args += ["--data-dir", str(tmp / "bridge"), "--log-level", "WARNING"]
    server_args = ["serve", "--http", "--port", server_url.rsplit(":", 1)[1]]
    server_args += ["--data-dir", str(tmp / "server"), "--bridge", f"{bridge_url}#{TOKEN}"]
    server_args += ["--log-level", "WARNING"]
    with (
        _process(bridge_args, f"{bridge_url}/health", tmp / "bridge.log"),
        _process(server_args, f"{server_url}/api/v1/health", tmp / "server.log"),
    ):
        yield server_url, bridge_url


# -- 1. latency ---------------------------------------------------------------------------------


class StoredAt(httpx.BaseTransport):
    """The bridge's own transport, noting when the server answered for each epoch's points."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.stored: dict[int, float] = {}  # epoch -> when the server answered
        self.ended: dict[int, float] = {}  # epoch -> its end (the points' wall time)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        response.read()
        now = time.time()
        if request.url.path.endswith("/metrics") and response.is_success:
            for p in json.loads(request.content)["points"]:
                if p["name"] == "train_loss":
                    self.stored[p["step"]] = now
                    self.ended[p["step"]] = p["wall_time"]
        return response


def latency(tmp: Path, epochs: int) -> list[float]:
    """A bridge session (the bridge's own SessionManager, in this process) pushing to a real
    server process: from each epoch's end (its record's timestamp, sent as the points' wall time)
    to the server's answer that it stored them."""
    spec = {
        "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 2000},
        "model": {"hidden_sizes": [32]},
        "epochs": epochs,
        "batch_size": 64,
        "device": "cpu",
    }
    transport = StoredAt()
    with server_and_bridge(tmp) as (server_url, _bridge_url):
        created = httpx.post(f"{server_url}/api/v1/operations", json={"backend": "external"})
        operation_id = created.json()["operation_id"]
        sessions = SessionManager(BridgeOptions(data_dir=tmp / "session"), transport=transport)
        request = SessionRequest.model_validate(
            {
                "operation_id": operation_id,
                "spec": spec,
                "server_url": server_url,
                "push_token": created.json()["push_token"],
            }
        )
        sessions.start(request)
        deadline = time.monotonic() + 300
        while not sessions.get(operation_id).delivered and time.monotonic() < deadline:
            time.sleep(0.05)
        sessions.close()
        metrics = httpx.get(
            f"{server_url}/api/v1/operations/{operation_id}/metrics",
            params={"metrics": "train_loss", "max_points": 10_000},
        ).json()
    assert metrics["series"][0]["steps"] == list(range(1, epochs + 1)), "an epoch is missing"
    assert sorted(transport.stored) == list(range(1, epochs + 1))
    return [(transport.stored[e] - transport.ended[e]) * 1000 for e in range(1, epochs + 1)]


# -- 2. overhead --------------------------------------------------------------------------------

OVERHEAD_SPEC: dict[str, Any] = {
    "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 40_000},
    "model": {"hidden_sizes": [256, 256]},
    "epochs": 5,
    "batch_size": 128,
    "device": "cpu",
    "torch_threads": 1,
    "log_every_n_steps": 10,
}


class NullSink:
    def on_epoch(self, record: EpochRecord) -> None:
        pass

    def on_step(self, record: StepRecord) -> None:
        pass


def _bare(spec: TrainingSpec, artifacts: Path) -> tuple[float, float]:
    """(wall s, this process's CPU s) of run_training in a fresh thread, sending nothing;
    checkpoints are written as a session writes them."""
    from trainer.loop import run_training

    took: list[float] = []
    options = TrainerOptions(artifact_dir=artifacts)

    def work() -> None:
        started = time.time()
        run_training(spec, NullSink(), cancel=threading.Event(), options=options)
        took.append(time.time() - started)

    cpu = time.process_time()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return took[0], time.process_time() - cpu


def _pushed(sessions: SessionManager, server_url: str, spec: TrainingSpec) -> tuple[float, float]:
    """(wall s, this process's CPU s) of a bridge session: wall from its started_at to its
    finished_at (run_training, with everything the session does per epoch); CPU until the
    server has everything (the sender's and the heartbeats' work included)."""
    created = httpx.post(f"{server_url}/api/v1/operations", json={"backend": "external"})
    operation_id = created.json()["operation_id"]
    request = SessionRequest.model_validate(
        {
            "operation_id": operation_id,
            "spec": spec,
            "server_url": server_url,
            "push_token": created.json()["push_token"],
        }
    )
    cpu = time.process_time()
    sessions.start(request)
    while not (info := sessions.get(operation_id)).delivered:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    assert info.status == "completed", info
    assert info.finished_at is not None and info.started_at is not None, info
    return info.finished_at - info.started_at, cpu


def overhead(tmp: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per round, over the round's bare run: "pushed" (a bridge session pushing to the real
    server process on this machine) and "control" (a second bare run: the noise floor). Each:
    the wall ratio, the CPU ratio and the wall ms added per epoch."""
    spec = TrainingSpec.model_validate(OVERHEAD_SPEC)
    artifacts = tmp / "bare-artifacts"
    _bare(spec.model_copy(update={"epochs": 1}), artifacts)  # warm-up: imports, allocator
    results: dict[str, dict[str, list[float]]] = {
        kind: {"wall": [], "cpu": [], "per_epoch": []} for kind in ("pushed", "control")
    }
    with server_and_bridge(tmp) as (server_url, _bridge_url):
        sessions = SessionManager(BridgeOptions(data_dir=tmp / "sessions"))
        try:
            for i in range(rounds):
                order = ["bare", "pushed", "control"]
                order = order[i % 3 :] + order[: i % 3]  # each kind first, second and last
                took = {
                    kind: _pushed(sessions, server_url, spec)
                    if kind == "pushed"
                    else _bare(spec, artifacts)
                    for kind in order
                }
                for kind, result in results.items():
                    result["wall"].append(took[kind][0] / took["bare"][0])
                    result["cpu"].append(took[kind][1] / took["bare"][1])
                    result["per_epoch"].append(
                        (took[kind][0] - took["bare"][0]) * 1000 / spec.epochs
                    )
        finally:
            sessions.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the latency run")
    parser.add_argument("--rounds", type=int, default=6, help="bare/pushed rounds for overhead")
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as `training-mcp bridge` does
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        lat = latency(Path(tmp) / "latency", args.epochs)
        over = overhead(Path(tmp) / "overhead", args.rounds)
    median = statistics.median
    rows = [
        ("epoch end on the bridge -> stored (ms)", "p50", f"{_p(lat, 0.5):.1f}", ""),
        ("", "p99", f"{_p(lat, 0.99):.1f}", "<= 50"),
        ("", "max", f"{max(lat):.1f}", ""),
    ]
    for kind, label in (("pushed", "pushed"), ("control", "bare again (noise)")):
        wall, cpu, per_epoch = over[kind]["wall"], over[kind]["cpu"], over[kind]["per_epoch"]
        target = "<= 1.01" if kind == "pushed" else ""
        rows += [
            (f"training wall, {label} / bare", "median", f"{median(wall):.4f}", target),
            ("", "min..max", f"{min(wall):.3f}..{max(wall):.3f}", ""),
            ("  wall added per epoch (ms)", "median", f"{median(per_epoch):.1f}", ""),
            ("  process CPU / bare", "median", f"{median(cpu):.4f}", ""),
        ]
    print(
        f"host bridge, loopback, CPU ({os.cpu_count()} cores): {len(lat)} epochs timed; "
        f"{args.rounds} rounds of {OVERHEAD_SPEC['epochs']}-epoch runs"
    )
    print(f"{'measure':48} {'stat':>8} {'value':>13} {'target':>8}")
    for name, stat, value, target in rows:
        print(f"{name:48} {stat:>8} {value:>13} {target:>8}")


if __name__ == "__main__":
    main()
