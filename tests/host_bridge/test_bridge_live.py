"""A real server (`training-mcp serve --http`) and real bridges (`training-mcp bridge`), both on
CPU, on free loopback ports with temporary data dirs: dispatch, restarts, a killed bridge, a wrong
token, cancel. State is observed through the server's and the bridge's own APIs, with deadlines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextResourceContents

from mcp_server.config import BridgeTarget, Secret, ServerConfig
from mcp_server.core.errors import UnavailableError
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import open_service
from tests.host_bridge import processes
from tests.host_bridge.processes import Process, poll_until

pytestmark = pytest.mark.slow

TOKEN = "bridge-token"
TINY = {"dataset": "blobs", "epochs": 5, "hidden_sizes": [16], "batch_size": 64, "device": "cpu"}
# Long enough to act on mid-run (tens of ms per epoch), never finishing by itself.
ENDLESS = {**TINY, "epochs": 100_000}
API = "/api/v1/operations"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    """One bridge and a server that dispatches to it, shared by the tests that leave both up."""
    tmp = tmp_path_factory.mktemp("pair")
    bridge = processes.bridge(tmp, TOKEN)
    server = processes.server(tmp, [(bridge.url, TOKEN)])
    with processes.running(bridge, server):
        yield bridge, server


def _get(url: str, **params: Any) -> Any:
    headers = {"authorization": f"Bearer {TOKEN}"}
    response = httpx.get(url, params=params, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def _start(server: Process, args: dict[str, Any]) -> str:
    response = httpx.post(server.url + API, json=args, timeout=30)
    assert response.status_code == 202, response.text
    operation_id: str = response.json()["operation_id"]
    return operation_id


def _operation(server: Process, operation_id: str) -> dict[str, Any]:
    op: dict[str, Any] = _get(f"{server.url}{API}/{operation_id}")
    return op


def _epochs(server: Process, operation_id: str, name: str = "train_loss") -> tuple[list[int], int]:
    """The steps stored for one metric, and how many points it has in all."""
    metrics = _get(f"{server.url}{API}/{operation_id}/metrics", metrics=name, max_points=10_000)
    (series,) = metrics["series"]
    return series["steps"], series["total_points"]


def _shape(value: Any) -> Any:
    """Keys, lengths and types, not values: what a client parsing the answer depends on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "bridge_url"}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


async def _resource(client: Client, uri: str) -> Any:
    content = (await client.read_resource(uri)).contents[0]
    assert isinstance(content, TextResourceContents)
    return json.loads(content.text)


@pytest.mark.anyio
async def test_a_bridge_run_reads_exactly_like_a_local_run_over_mcp_and_rest(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    async with (
        Client(streamable_http_client(f"{server.url}/mcp")) as mcp,
        httpx.AsyncClient(base_url=server.url + API, timeout=10) as rest,
    ):

        async def get(path: str, **params: Any) -> Any:
            response = await rest.get(path, params=params)
            response.raise_for_status()
            return response.json()

        ids = {}
        for backend in ("bridge", "local"):
            started = await mcp.call_tool("start_training", {**TINY, "backend": backend})
            assert started.structured_content is not None, started
            ids[backend] = started.structured_content["operation_id"]
        for operation_id in ids.values():
            waited = await mcp.call_tool(
                "wait_for_operation",
                {"operation_id": operation_id, "until": "end", "timeout_s": 55},
            )
            assert waited.structured_content is not None
            assert waited.structured_content["status"] == "completed"
        seen: dict[str, dict[str, Any]] = {}
        for backend, operation_id in ids.items():
            base = f"training://operations/{operation_id}"
            seen[backend] = {
                "mcp operation": await _resource(mcp, base),
                "mcp metrics": await _resource(mcp, f"{base}/metrics"),
                "rest operation": await get(f"/{operation_id}"),
                "rest metrics": await get(
                    f"/{operation_id}/metrics", metrics="all", include_steps="true"
                ),
                "rest analysis keys": sorted(await get(f"/{operation_id}/analysis")),
            }
    remote, local = seen["bridge"], seen["local"]
    assert remote["rest operation"]["backend"] == "bridge"
    assert remote["rest operation"]["bridge_url"] == bridge.url
    assert remote["rest operation"]["device"] == local["rest operation"]["device"] == "cpu"
    assert remote["rest operation"]["epochs_done"] == 5
    for view in seen["bridge"]:
        assert _shape(remote[view]) == _shape(local[view]), view
    by_name = {s["name"]: s for s in local["rest metrics"]["series"]}
    for series in remote["rest metrics"]["series"]:
        twin = by_name[series["name"]]
        assert series["steps"] == twin["steps"], series["name"]
        if series["name"] in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert series["values"] == pytest.approx(twin["values"], rel=1e-4), series["name"]
    assert _get(f"{bridge.url}/sessions/{ids['bridge']}")["delivered"] is True


def test_cancel_from_the_server_stops_the_bridges_run_and_keeps_every_epoch(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    operation_id = _start(server, {**ENDLESS, "backend": "bridge"})
    poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 30, server)
    response = httpx.post(
        f"{server.url}{API}/{operation_id}/cancel", json={"reason": "enough"}, timeout=30
    )
    assert response.status_code == 200, response.text
    stopped = response.json()
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
    session = _get(f"{bridge.url}/sessions/{operation_id}")
    assert (session["status"], session["reason"]) == ("cancelled", "enough")
    assert session["cancel_requested"] and session["points_pending"] == 0
    steps, total = _epochs(server, operation_id)
    assert steps == list(range(1, session["epochs_done"] + 1)) and total == len(steps)
    assert _get(f"{bridge.url}/health")["sessions_running"] == 0


@pytest.mark.anyio
async def test_a_wrong_token_gets_401_and_trains_nothing(
    pair: tuple[Process, Process], tmp_path: Path
) -> None:
    bridge, server = pair
    auth = {"authorization": f"Bearer {TOKEN}"}
    request = {"operation_id": "op-intruder", "spec": TINY, "server_url": server.url}
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        before = (await http.get("/sessions", headers=auth)).json()["sessions"]
        for headers in ({"authorization": "Bearer wrong"}, {}):
            response = await http.post("/sessions", json=request, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        # A server given the wrong token for the bridge refuses to start the run, creating none.
        config = ServerConfig(
            data_dir=tmp_path,
            bridges=(BridgeTarget(bridge.url, Secret("wrong")),),
            public_url=server.url,
        )
        async with open_service(config) as service:
            with pytest.raises(UnavailableError, match="refuses this server's token"):
                await service.start_training(
                    StartTrainingArgs.model_validate(TINY | {"backend": "bridge"})
                )
            assert (await service.list_operations()).returned == 0
        assert (await http.get("/sessions", headers=auth)).json()["sessions"] == before
        assert (await http.get("/health")).json()["sessions_running"] == 0


def test_a_server_stopped_for_part_of_a_run_gets_every_epoch_exactly_once(
    tmp_path: Path,
) -> None:
    bridge = processes.bridge(tmp_path, TOKEN)
    server = processes.server(tmp_path, [(bridge.url, TOKEN)])
    epochs = 60
    # 3000 samples: a few tens of ms per epoch, so the outage falls inside the run.
    spec = {"dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 3000}}
    args = {"spec": spec, "epochs": epochs, "hidden_sizes": [16], "batch_size": 64}
    with processes.running(bridge, server):
        operation_id = _start(server, {**args, "device": "cpu", "backend": "bridge"})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 3, 30, server)
        server.stop()
        stored_before = _get(f"{bridge.url}/sessions/{operation_id}")["epochs_done"]
        assert stored_before < epochs  # the outage starts mid-run
        # The bridge trains on and spools while the server is away.
        poll_until(
            lambda: (
                _get(f"{bridge.url}/sessions/{operation_id}")["epochs_done"]
                >= min(epochs, stored_before + 5)
            ),
            30,
            bridge,
        )
        assert _get(f"{bridge.url}/sessions/{operation_id}")["points_pending"] > 0
        server.start().wait_ready()
        poll_until(lambda: _operation(server, operation_id)["status"] != "running", 60, server)
        op = _operation(server, operation_id)
        assert (op["status"], op["error"], op["epochs_done"]) == ("completed", None, epochs)
        for name in ("train_loss", "val_loss", "learning_rate"):
            assert _epochs(server, operation_id, name) == (list(range(1, epochs + 1)), epochs)
        steps, total = _epochs(server, operation_id, "step/train_loss")
        assert steps == sorted(set(steps)) and total == len(steps) > 0
        assert _get(f"{bridge.url}/sessions/{operation_id}")["delivered"] is True


def test_a_killed_bridge_fails_its_run_as_bridge_lost_within_the_timeout(
    tmp_path: Path,
) -> None:
    timeout_s = 2.0
    bridge = processes.bridge(tmp_path, TOKEN)
    server = processes.server(tmp_path, [(bridge.url, TOKEN)], heartbeat_timeout_s=timeout_s)
    with processes.running(bridge, server):
        operation_id = _start(server, {**ENDLESS, "backend": "bridge"})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 2, 30, server)
        bridge.stop(kill=True)
        killed = time.monotonic()
        # The watchdog checks every quarter timeout: lost within the timeout plus one check.
        poll_until(lambda: _operation(server, operation_id)["status"] != "running", 10, server)
        elapsed = time.monotonic() - killed
        op = _operation(server, operation_id)
    assert op["status"] == "failed" and op["reason"] == "bridge lost"
    assert op["error"].startswith("bridge lost: no heartbeat from " + bridge.url)
    assert elapsed <= timeout_s + 1.5, elapsed


def test_a_bridge_run_stores_the_system_metrics_of_the_bridges_process(
    pair: tuple[Process, Process],
) -> None:
    _, server = pair
    operation_id = _start(server, {**TINY, "backend": "bridge"})
    poll_until(lambda: _operation(server, operation_id)["status"] == "completed", 60, server)
    metrics = _get(f"{server.url}{API}/{operation_id}/metrics", metrics="system/")
    series = {s["name"]: s for s in metrics["series"]}
    # One sample at least: the last one, taken when training ended, before the final status.
    assert {"system/cpu_percent", "system/rss_mb"} <= series.keys()
    assert min(series["system/rss_mb"]["values"]) > 10  # the bridge's process, torch loaded
    assert metrics["available"][-1] == "system/"
