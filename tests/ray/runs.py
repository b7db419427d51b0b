"""What the Ray tests share: a real server against the test's cluster, and its REST mirror
read with deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from host_bridge.ray_worker import actor_name
from tests.host_bridge.processes import Process, free_port
from tests.ray.cluster import Cluster, connect

API = "/api/v1/operations"
TINY = {"dataset": "blobs", "hidden_sizes": [16], "batch_size": 64, "device": "cpu"}
ENDLESS = {**TINY, "epochs": 100_000}  # tens of ms per epoch: acted on mid-run, never done alone
SMALL = {"resources": {"num_cpus": 1}}


def ray_server(
    tmp: Path, cluster: Cluster, *extra: str, port: int | None = None, address: str | None = None
) -> Process:
    """`training-mcp serve --http --ray ADDRESS` (the cluster's GCS address by default)."""
    port = port or free_port()
    args = ["serve", "--http", "--port", str(port), "--data-dir", str(tmp / "server")]
    args += ["--ray", address or cluster.address, "--log-level", "WARNING", *extra]
    return Process("server", f"http://127.0.0.1:{port}", args, tmp / "server.log")


def start_run(server: Process, args: dict[str, Any]) -> str:
    response = httpx.post(server.url + API, json={**args, "backend": "ray"}, timeout=30)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["backend"] == "ray"
    operation_id: str = body["operation_id"]
    return operation_id


def operation(server: Process, operation_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}{API}/{operation_id}", timeout=10)
    response.raise_for_status()
    op: dict[str, Any] = response.json()
    return op


def stored_steps(
    server: Process, operation_id: str, name: str = "train_loss"
) -> tuple[list[int], int]:
    """The steps stored for one metric, and how many points it has in all."""
    response = httpx.get(
        f"{server.url}{API}/{operation_id}/metrics",
        params={"metrics": name, "max_points": 10_000},
        timeout=10,
    )
    response.raise_for_status()
    (series,) = response.json()["series"]
    return series["steps"], series["total_points"]


def cancel(server: Process, operation_id: str, reason: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}{API}/{operation_id}/cancel", json={"reason": reason}, timeout=30
    )
    assert response.status_code == 200, response.text
    op: dict[str, Any] = response.json()
    return op


def assert_only_the_worker_pushes(server: Process, operation_id: str) -> None:
    """Nobody but the run's own worker (holding its push credential) may push into it, report
    its end or beat its heart: 403 without the credential or with another one."""
    url = f"{server.url}{API}/{operation_id}"
    pushes = [
        ("/metrics", {"points": [{"name": "train_loss", "step": 10**9, "value": 0.0}]}),
        ("/status", {"status": "completed"}),
        ("/heartbeat", {}),
    ]
    for headers in ({}, {"X-Training-Push-Token": "not-the-runs-credential"}):
        for path, body in pushes:
            response = httpx.post(url + path, json=body, headers=headers, timeout=10)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["field"] == "X-Training-Push-Token", response.text


def worker_pid(cluster: Cluster, operation_id: str) -> int:
    ray = connect(cluster)
    actor = ray.get_actor(actor_name(operation_id))
    pid: int = ray.get(actor.ready.remote(), timeout=30)["pid"]
    return pid


def actor_gone(cluster: Cluster, operation_id: str) -> bool:
    ray = connect(cluster)
    try:
        ray.get_actor(actor_name(operation_id))
    except ValueError:
        return True
    return False
