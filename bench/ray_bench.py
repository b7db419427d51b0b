"""Ray benchmark: how fast an epoch gets from where it trains to a subscriber, for Ray runs next to
local and bridge runs, on one real server.

One `training-mcp serve --http --ray ADDRESS --bridge URL` process, a real `training-mcp bridge`
and a real one-node Ray head (`ray start --head`) on loopback. The same spec (many short CPU
epochs) is trained once per backend, each round in a rotating order. For every epoch: from its
end (the epoch record's timestamp, stored as its points' wall time) to the moment its `epoch`
event reaches a client of the server's event stream (`GET /operations/{id}/events`), that is,
stored, analysed and pushed out. Also the throughput (epochs delivered per second while
training) and the start-up (from `POST /operations` to the first epoch delivered: a Ray run
waits for Ray to place its actor and for the worker to import torch). The local run is the
baseline: ratios are against it, measured in the same run.

Ray's head probes network addresses on start, so the bench runs itself inside a loopback-only
network namespace (`unshare -n`, as root or with user namespaces) and stops where none can be made.

Usage: python bench/ray_bench.py [--epochs 150] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.database import DB_FILENAME  # noqa: E402
from tests.host_bridge import processes  # noqa: E402
from tests.ray.cluster import in_loopback_namespace, ray_head  # noqa: E402

TOKEN = "bench-token"
BACKENDS = ("local", "bridge", "ray")
API = "/api/v1/operations"


def _reexec_in_namespace() -> None:
    """Run this very command again inside a loopback-only network namespace."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        sys.exit("ray_bench: cannot make a loopback-only network namespace (unshare -n)")
    script = 'ip link set lo up && exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class _Listener:
    """Reads one run's event stream in a thread: when each epoch event arrived (Unix time)."""

    def __init__(self, url: str) -> None:
        self.arrived: dict[int, float] = {}
        self._url = url
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with httpx.stream("GET", self._url, timeout=120) as response:
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "epoch":
                    self.arrived.setdefault(json.loads(line[6:])["epoch"], time.time())

    def join(self) -> None:
        self._thread.join(timeout=120)


def _wall_times(db: Path, operation_id: str) -> dict[int, float]:
    """Each epoch's end as stored with its points (read after the run, from the server's file)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT p.step, p.wall_ms + s.wall_base_ms FROM points p "
            "JOIN series s ON s.id = p.series_id "
            "WHERE s.operation_id = ? AND s.name = 'train_loss'",
            (operation_id,),
        ).fetchall()
    return {int(step): wall_ms / 1000 for step, wall_ms in rows}


def _one_run(server: str, db: Path, backend: str, epochs: int) -> dict[str, float]:
    args = {"dataset": "blobs", "epochs": epochs, "hidden_sizes": [16], "batch_size": 64}
    args |= {"device": "cpu", "backend": backend, "log_every_n_steps": 0}
    posted = time.time()
    response = httpx.post(server + API, json=args, timeout=60)
    response.raise_for_status()
    operation_id = response.json()["operation_id"]
    listener = _Listener(f"{server}{API}/{operation_id}/events")
    listener.join()
    status = httpx.get(f"{server}{API}/{operation_id}", timeout=10).json()["status"]
    if status != "completed" or len(listener.arrived) != epochs:
        raise RuntimeError(f"{backend} run {operation_id}: {status}, {len(listener.arrived)} ep")
    ended = _wall_times(db, operation_id)
    latencies = [(listener.arrived[e] - ended[e]) * 1000 for e in range(1, epochs + 1)]
    first, last = min(listener.arrived.values()), max(listener.arrived.values())
    return {
        "p50": statistics.median(latencies),
        "p95": _p(latencies, 0.95),
        "max": max(latencies),
        "epochs_per_s": (epochs - 1) / (last - first),
        "startup_s": first - posted,
    }


@contextmanager
def _stack(tmp: Path) -> Iterator[tuple[str, Path]]:
    with ray_head(num_cpus=2) as cluster:
        bridge = processes.bridge(tmp, TOKEN)
        server = processes.server(tmp, [(bridge.url, TOKEN)], heartbeat_timeout_s=30)
        server.args += ["--ray", cluster.address]
        with processes.running(bridge, server):
            yield server.url, tmp / "server" / DB_FILENAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    if not in_loopback_namespace():
        _reexec_in_namespace()
    results: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as (server, db):
        for round_ in range(opts.rounds):
            order = BACKENDS[round_ % 3 :] + BACKENDS[: round_ % 3]
            for backend in order:
                results[backend].append(_one_run(server, db, backend, opts.epochs))
    print(f"\nepoch end -> event at a subscriber, {opts.epochs} epochs x {opts.rounds} rounds")
    print("(medians over rounds; ratios against the local run, measured in the same run)\n")
    header = f"{'backend':8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'epochs/s':>9}"
    print(header + f" {'x local':>8} {'start s':>8}")
    base = statistics.median(r["epochs_per_s"] for r in results["local"])
    for backend in BACKENDS:
        rows = results[backend]

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"{backend:8} {med('p50'):8.1f} {med('p95'):8.1f} {med('max'):8.1f} "
            f"{med('epochs_per_s'):9.1f} {med('epochs_per_s') / base:8.2f} {med('startup_s'):8.2f}"
        )


if __name__ == "__main__":
    main()
