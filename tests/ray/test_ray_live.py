"""A real server (`training-mcp serve --http --ray ADDRESS`) against a real one-node Ray cluster,
every run a real CPU training in a Ray worker pushing back over loopback: runs in parallel, stop,
a killed worker (failed, or retried where allowed), a server restarted mid-run. State is observed
through the server's REST mirror and the cluster itself, with deadlines."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
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

from tests.host_bridge.processes import Process, free_port, poll_until
from tests.ray.cluster import Cluster, connect, ray_node
from tests.ray.runs import (
    API,
    ENDLESS,
    SMALL,
    TINY,
    actor_gone,
    assert_only_the_worker_pushes,
    cancel,
    operation,
    ray_server,
    start_run,
    stored_steps,
    worker_pid,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, cluster: Cluster) -> Iterator[Process]:
    process = ray_server(tmp_path, cluster).start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


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
    poll_until(lambda: operation(server, endless)["epochs_done"] >= 1, 60, server)
    assert_only_the_worker_pushes(server, endless)
    before = operation(server, endless)["epochs_done"]
    finite = start_run(server, {**TINY, **SMALL, "epochs": epochs, "name": "finite"})
    poll_until(lambda: operation(server, finite)["status"] == "completed", 90, server)
    # The endless run trained all the while beside it, on its own worker.
    during = operation(server, endless)
    assert (during["status"], during["device"]) == ("running", "cpu")
    assert during["epochs_done"] > before
    poll_until(lambda: operation(server, endless)["epochs_done"] >= during["epochs_done"] + 2, 30)
    done = operation(server, finite)
    assert (done["backend"], done["error"], done["epochs_done"]) == ("ray", None, epochs)
    for name in ("train_loss", "val_loss", "learning_rate"):
        assert stored_steps(server, finite, name) == (list(range(1, epochs + 1)), epochs)
    steps, total = stored_steps(server, finite, "step/train_loss")
    assert steps == sorted(set(steps)) and total == len(steps) > 0
    poll_until(lambda: actor_gone(cluster, finite), 30)  # collected: its CPU is free again


def _check_stopped(server: Process, cluster: Cluster, endless: str) -> None:
    stopped = operation(server, endless)
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
    steps, total = stored_steps(server, endless)
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
    poll_until(lambda: actor_gone(cluster, endless), 30)


def test_a_cuda_run_goes_to_ray_and_waits_there_for_a_gpu_until_stopped(server: Process) -> None:
    response = httpx.post(
        server.url + API, json={**TINY, "epochs": 3, "device": "cuda"}, timeout=30
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert (started["backend"], started["status"]) == ("ray", "queued")
    # This cluster has no GPU: Ray keeps the actor pending (an autoscaler would add a node).
    op = operation(server, started["operation_id"])
    assert (op["status"], op["epochs_done"]) == ("queued", 0)
    stopped = cancel(server, started["operation_id"], "no GPU today")
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "no GPU today")


def test_a_killed_worker_fails_the_run_with_the_reason(server: Process, cluster: Cluster) -> None:
    operation_id = start_run(server, {**ENDLESS, **SMALL})
    poll_until(lambda: operation(server, operation_id)["epochs_done"] >= 2, 60, server)
    os.kill(worker_pid(cluster, operation_id), signal.SIGKILL)
    poll_until(lambda: operation(server, operation_id)["status"] != "running", 30, server)
    op = operation(server, operation_id)
    assert (op["status"], op["reason"]) == ("failed", "ray worker lost")
    assert op["error"].startswith("ray worker lost: ")
    assert "died" in op["error"] and "stored epochs are kept" in op["error"]
    steps, total = stored_steps(server, operation_id)
    assert steps == list(range(1, op["epochs_done"] + 1)) and total == len(steps) >= 2


def test_a_lost_node_fails_its_run_with_the_reason(server: Process, cluster: Cluster) -> None:
    ray = connect(cluster)
    with ray_node(cluster, num_cpus=8) as node:
        poll_until(lambda: ray.cluster_resources().get("CPU", 0) >= 12, 60)
        # More CPUs than the head has: only the new node can take it.
        operation_id = start_run(server, {**ENDLESS, "resources": {"num_cpus": 6}})
        poll_until(lambda: operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        os.killpg(node.pid, signal.SIGKILL)
        poll_until(lambda: operation(server, operation_id)["status"] != "running", 60, server)
    op = operation(server, operation_id)
    assert (op["status"], op["reason"]) == ("failed", "ray worker lost")
    assert op["error"].startswith("ray worker lost: ") and "stored epochs are kept" in op["error"]
    assert "its node has died" in op["error"]
    steps, total = stored_steps(server, operation_id)
    assert steps == list(range(1, op["epochs_done"] + 1)) and total == len(steps) >= 2


def test_a_killed_worker_is_retried_where_the_operator_allows_it(
    tmp_path: Path, cluster: Cluster
) -> None:
    epochs = 40
    server = ray_server(tmp_path, cluster, "--ray-retries", "1").start()
    try:
        server.wait_ready()
        operation_id = start_run(server, {**TINY, **SMALL, "epochs": epochs, "seed": 3})
        poll_until(lambda: operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        first = worker_pid(cluster, operation_id)
        os.kill(first, signal.SIGKILL)
        poll_until(lambda: operation(server, operation_id)["status"] != "running", 90, server)
        op = operation(server, operation_id)
        assert (op["status"], op["error"], op["epochs_done"]) == ("completed", None, epochs)
        for name in ("train_loss", "val_loss"):
            assert stored_steps(server, operation_id, name) == (list(range(1, epochs + 1)), epochs)
    finally:
        server.stop()


def test_a_server_restarted_mid_run_reattaches_it(tmp_path: Path, cluster: Cluster) -> None:
    port = free_port()  # the workers push to this URL: the restarted server must keep it
    server = ray_server(tmp_path, cluster, port=port).start()
    try:
        server.wait_ready()
        operation_id = start_run(server, {**ENDLESS, **SMALL})
        poll_until(lambda: operation(server, operation_id)["epochs_done"] >= 2, 60, server)
        server.stop()  # graceful: the run must survive it, as it survives a crash
        down = time.monotonic()
        server.start().wait_ready()
        assert time.monotonic() - down < 60
        before = operation(server, operation_id)
        assert before["status"] == "running"  # re-attached, not interrupted nor lost
        # What the worker trained and spooled while the server was away arrives, and more.
        poll_until(
            lambda: operation(server, operation_id)["epochs_done"] >= before["epochs_done"] + 3,
            30,
            server,
        )
        stopped = cancel(server, operation_id, "after the restart")
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "after the restart")
        steps, total = stored_steps(server, operation_id)
        assert steps == list(range(1, stopped["epochs_done"] + 1)) and total == len(steps)
        poll_until(lambda: actor_gone(cluster, operation_id), 30)
    finally:
        server.stop()


def test_a_server_on_a_ray_client_address_trains_and_stops_runs(
    tmp_path: Path, cluster: Cluster
) -> None:
    if importlib.util.find_spec("grpc") is None:
        pytest.skip('Ray Client needs grpcio (pip install "ray[client]")')
    poll_until(lambda: _listening(cluster.client_port), 60)
    client = f"ray://127.0.0.1:{cluster.client_port}"
    server = ray_server(tmp_path, cluster, address=client).start()
    try:
        try:
            server.wait_ready()
        except RuntimeError as exc:  # say why Ray's client server refused the connection
            raise RuntimeError(f"{exc}\n{cluster.log_tail(name='ray_client_server*')}") from None
        endless = start_run(server, {**ENDLESS, **SMALL})
        finite = start_run(server, {**TINY, **SMALL, "epochs": 5})
        poll_until(lambda: operation(server, finite)["status"] == "completed", 90, server)
        assert stored_steps(server, finite, "val_loss") == ([1, 2, 3, 4, 5], 5)
        poll_until(lambda: operation(server, endless)["epochs_done"] >= 2, 60, server)
        stopped = cancel(server, endless, "through the client")
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "through the client")
        steps, total = stored_steps(server, endless)
        assert steps == list(range(1, stopped["epochs_done"] + 1)) and total == len(steps)
        poll_until(lambda: actor_gone(cluster, endless) and actor_gone(cluster, finite), 30)
    finally:
        server.stop()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
