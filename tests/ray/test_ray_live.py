"""A real server (`training-mcp serve --http --ray ADDRESS`) against a real one-node Ray cluster,
every run a real CPU training in a Ray worker pushing back over loopback: runs in parallel, stop,
a killed worker (failed, or retried where allowed), a server restarted mid-run. State is observed
through the server's REST mirror and the cluster itself, with deadlines."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from host_bridge.ray_worker import actor_name
from tests.host_bridge.processes import Process, free_port, poll_until
from tests.ray.cluster import Cluster, connect, ray_node

pytestmark = pytest.mark.slow

API = "/api/v1/operations"
TINY = {"dataset": "blobs", "hidden_sizes": [16], "batch_size": 64, "device": "cpu"}
ENDLESS = {**TINY, "epochs": 100_000}  # tens of ms per epoch: acted on mid-run, never done alone
SMALL = {"resources": {"num_cpus": 1}}


def ray_server(tmp: Path, cluster: Cluster, *extra: str, port: int | None = None) -> Process:
    port = port or free_port()
    args = ["serve", "--http", "--port", str(port), "--data-dir", str(tmp / "server")]
    args += ["--ray", cluster.address, "--log-level", "WARNING", *extra]
    return Process("server", f"http://127.0.0.1:{port}", args, tmp / "server.log")


@pytest.fixture
def server(tmp_path: Path, cluster: Cluster) -> Iterator[Process]:
    process = ray_server(tmp_path, cluster).start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def _start(server: Process, args: dict[str, Any]) -> str:
    response = httpx.post(server.url + API, json={**args, "backend": "ray"}, timeout=30)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["backend"] == "ray"
    operation_id: str = body["operation_id"]
    return operation_id


def _operation(server: Process, operation_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}{API}/{operation_id}", timeout=10)
    response.raise_for_status()
    op: dict[str, Any] = response.json()
    return op


def _epochs(server: Process, operation_id: str, name: str = "train_loss") -> tuple[list[int], int]:
    """The steps stored for one metric, and how many points it has in all."""
    response = httpx.get(
        f"{server.url}{API}/{operation_id}/metrics",
        params={"metrics": name, "max_points": 10_000},
        timeout=10,
    )
    response.raise_for_status()
    (series,) = response.json()["series"]
    return series["steps"], series["total_points"]


def _cancel(server: Process, operation_id: str, reason: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}{API}/{operation_id}/cancel", json={"reason": reason}, timeout=30
    )
    assert response.status_code == 200, response.text
    op: dict[str, Any] = response.json()
    return op


def _worker_pid(cluster: Cluster, operation_id: str) -> int:
    ray = connect(cluster)
    actor = ray.get_actor(actor_name(operation_id))
    pid: int = ray.get(actor.ready.remote(), timeout=30)["pid"]
    return pid


def _worker_session(cluster: Cluster, operation_id: str) -> dict[str, Any]:
    """The run's session as the worker's own spool file has it (the actor may be gone)."""
    (path,) = cluster.spool_dir.glob(f"{operation_id}-*/spool.sqlite3")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT status, reason, cancel_requested, epochs_done, "
            "(SELECT count(*) FROM points) AS pending FROM sessions WHERE operation_id = ?",
            (operation_id,),
        ).fetchone()
    return dict(row)


def _actor_gone(cluster: Cluster, operation_id: str) -> bool:
    ray = connect(cluster)
    try:
        ray.get_actor(actor_name(operation_id))
    except ValueError:
        return True
    return False


@pytest.mark.anyio
async def test_two_runs_in_parallel_one_stopped_the_other_complete_with_every_epoch_once(
    server: Process, cluster: Cluster
) -> None:
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await mcp.call_tool(
            "start_training", {**ENDLESS, **SMALL, "name": "endless", "backend": "ray"}
        )
        assert started.structured_content is not None, started
        assert started.structured_content["backend"] == "ray"
        endless = str(started.structured_content["operation_id"])
        await anyio.to_thread.run_sync(_parallel_then_stopped, server, cluster, endless)
        stopped = await mcp.call_tool(
            "stop_training", {"operation_id": endless, "reason": "enough"}
        )
        assert stopped.structured_content is not None, stopped
        assert (stopped.structured_content["status"], stopped.structured_content["reason"]) == (
            "cancelled",
            "enough",
        )
    await anyio.to_thread.run_sync(_check_stopped, server, cluster, endless)


def _parallel_then_stopped(server: Process, cluster: Cluster, endless: str) -> None:
    epochs = 25
    poll_until(lambda: _operation(server, endless)["epochs_done"] >= 1, 60, server)
    before = _operation(server, endless)["epochs_done"]
    finite = _start(server, {**TINY, **SMALL, "epochs": epochs, "name": "finite"})
    poll_until(lambda: _operation(server, finite)["status"] == "completed", 90, server)
    # The endless run trained all the while beside it, on its own worker.
    during = _operation(server, endless)
    assert (during["status"], during["device"]) == ("running", "cpu")
    assert during["epochs_done"] > before
    poll_until(lambda: _operation(server, endless)["epochs_done"] >= during["epochs_done"] + 2, 30)
    done = _operation(server, finite)
    assert (done["backend"], done["error"], done["epochs_done"]) == ("ray", None, epochs)
    for name in ("train_loss", "val_loss", "learning_rate"):
        assert _epochs(server, finite, name) == (list(range(1, epochs + 1)), epochs)
    steps, total = _epochs(server, finite, "step/train_loss")
    assert steps == sorted(set(steps)) and total == len(steps) > 0
    poll_until(lambda: _actor_gone(cluster, finite), 30)  # collected: its CPU is free again


def _check_stopped(server: Process, cluster: Cluster, endless: str) -> None:
    stopped = _operation(server, endless)
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
    steps, total = _epochs(server, endless)
    assert steps == list(range(1, len(steps) + 1)) and total == len(steps)
    assert len(steps) == stopped["epochs_done"] >= 3
    # The stop reached the worker, which delivered every epoch it trained, and trained no more.
    spool = _worker_session(cluster, endless)
    assert (spool["status"], spool["reason"], spool["cancel_requested"]) == (
        "cancelled",
        "enough",
        1,
    )
    assert (spool["epochs_done"], spool["pending"]) == (stopped["epochs_done"], 0)
    poll_until(lambda: _actor_gone(cluster, endless), 30)


def test_a_cuda_run_goes_to_ray_and_waits_there_for_a_gpu_until_stopped(server: Process) -> None:
    response = httpx.post(
        server.url + API, json={**TINY, "epochs": 3, "device": "cuda"}, timeout=30
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert (started["backend"], started["status"]) == ("ray", "queued")
    # This cluster has no GPU: Ray keeps the actor pending (an autoscaler would add a node).
    op = _operation(server, started["operation_id"])
    assert (op["status"], op["epochs_done"]) == ("queued", 0)
    stopped = _cancel(server, started["operation_id"], "no GPU today")
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "no GPU today")


def test_a_killed_worker_fails_the_run_with_the_reason(server: Process, cluster: Cluster) -> None:
    operation_id = _start(server, {**ENDLESS, **SMALL})
    poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 60, server)
    os.kill(_worker_pid(cluster, operation_id), signal.SIGKILL)
    poll_until(lambda: _operation(server, operation_id)["status"] != "running", 30, server)
    op = _operation(server, operation_id)
    assert (op["status"], op["reason"]) == ("failed", "ray worker lost")
    assert op["error"].startswith("ray worker lost: ")
    assert "died" in op["error"] and "stored epochs are kept" in op["error"]
    steps, total = _epochs(server, operation_id)
    assert steps == list(range(1, op["epochs_done"] + 1)) and total == len(steps) >= 2


def test_a_lost_node_fails_its_run_with_the_reason(server: Process, cluster: Cluster) -> None:
    ray = connect(cluster)
    with ray_node(cluster, num_cpus=8) as node:
        poll_until(lambda: ray.cluster_resources().get("CPU", 0) >= 12, 60)
        # More CPUs than the head has: only the new node can take it.
        operation_id = _start(server, {**ENDLESS, "resources": {"num_cpus": 6}})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        os.killpg(node.pid, signal.SIGKILL)
        poll_until(lambda: _operation(server, operation_id)["status"] != "running", 60, server)
    op = _operation(server, operation_id)
    assert (op["status"], op["reason"]) == ("failed", "ray worker lost")
    assert op["error"].startswith("ray worker lost: ") and "stored epochs are kept" in op["error"]
    assert "its node has died" in op["error"]
    steps, total = _epochs(server, operation_id)
    assert steps == list(range(1, op["epochs_done"] + 1)) and total == len(steps) >= 2


def test_a_killed_worker_is_retried_where_the_operator_allows_it(
    tmp_path: Path, cluster: Cluster
) -> None:
    epochs = 40
    server = ray_server(tmp_path, cluster, "--ray-retries", "1").start()
    try:
        server.wait_ready()
        operation_id = _start(server, {**TINY, **SMALL, "epochs": epochs, "seed": 3})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        first = _worker_pid(cluster, operation_id)
        os.kill(first, signal.SIGKILL)
        poll_until(lambda: _operation(server, operation_id)["status"] != "running", 90, server)
        op = _operation(server, operation_id)
        assert (op["status"], op["error"], op["epochs_done"]) == ("completed", None, epochs)
        for name in ("train_loss", "val_loss"):
            assert _epochs(server, operation_id, name) == (list(range(1, epochs + 1)), epochs)
    finally:
        server.stop()


def test_a_server_restarted_mid_run_reattaches_it(tmp_path: Path, cluster: Cluster) -> None:
    port = free_port()  # the workers push to this URL: the restarted server must keep it
    server = ray_server(tmp_path, cluster, port=port).start()
    try:
        server.wait_ready()
        operation_id = _start(server, {**ENDLESS, **SMALL})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        server.stop()  # graceful: the run must survive it, as it survives a crash
        down = time.monotonic()
        server.start().wait_ready()
        assert time.monotonic() - down < 60
        before = _operation(server, operation_id)
        assert before["status"] == "running"  # re-attached, not interrupted nor lost
        # What the worker trained and spooled while the server was away arrives, and more.
        poll_until(
            lambda: _operation(server, operation_id)["epochs_done"] >= before["epochs_done"] + 3,
            30,
            server,
        )
        stopped = _cancel(server, operation_id, "after the restart")
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "after the restart")
        steps, total = _epochs(server, operation_id)
        assert steps == list(range(1, stopped["epochs_done"] + 1)) and total == len(steps)
        poll_until(lambda: _actor_gone(cluster, operation_id), 30)
    finally:
        server.stop()
