"""Entry points on a bridge: a real `training-mcp serve --http` and `training-mcp bridge`, each
with its own copy of the declarations, on loopback. The script pushes its own epochs to the
server; the bridge session heartbeats, reports its end, and stops it on the server's cancel."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.host_bridge import processes
from tests.host_bridge.processes import Process
from tests.tool_calls import call_tool as _call
from tests.tool_calls import tool_text as _text

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bridge-token"

_DECLARED = f"""
[entry_points.plain]
command = [{str(sys.executable)!r}, "plain_pytorch.py", "--epochs", "{{epochs}}"]
cwd = {str(ROOT / "examples/scripts")!r}
[entry_points.plain.parameters]
epochs = {{ type = "int", default = 3, min = 1, max = 20 }}

[entry_points.fails]
command = [{str(sys.executable)!r}, "-c",
           "import sys; print('bad shape (3, 7)', file=sys.stderr); sys.exit(3)"]

[entry_points.endless]
command = [{str(sys.executable)!r}, "-c", "import time; print('up', flush=True); time.sleep(600)"]
"""
# Declared on the server only: the bridge must refuse it by its own file.
_SERVER_ONLY = """
[entry_points.server_only]
command = ["true"]

[entry_points.tb]
command = ["true"]
tensorboard_logdir = "runs/{operation_id}"
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    tmp = tmp_path_factory.mktemp("scripts")
    (tmp / "bridge.toml").write_text(_DECLARED)
    (tmp / "server.toml").write_text(_DECLARED + _SERVER_ONLY)
    bridge = processes.bridge(tmp, TOKEN)
    bridge.args += ["--entry-points", str(tmp / "bridge.toml"), "--max-sessions", "1"]
    bridge.args += ["--system-interval", "0.2"]
    server = processes.server(tmp, [(bridge.url, TOKEN)])
    server.args += ["--entry-points", str(tmp / "server.toml")]
    with processes.running(bridge, server):
        yield bridge, server


async def _refused(mcp: Client, args: dict[str, Any]) -> str:
    result = await mcp.call_tool("start_training", args)
    assert result.is_error, result
    return _text(result)


async def _http(method: str, url: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        return await http.request(method, url, **kwargs)


async def _session(bridge: Process, operation_id: str) -> dict[str, Any]:
    response = await _http("GET", f"{bridge.url}/sessions/{operation_id}")
    response.raise_for_status()
    session: dict[str, Any] = response.json()
    return session


async def test_a_bridge_script_completes_with_its_epochs_stored_and_analysed(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await _call(
            mcp,
            "start_training",
            {"entry_point": "plain", "params": {"epochs": 3}, "backend": "bridge"},
        )
        op = started["operation_id"]
        assert started["backend"] == "bridge"
        ended = await _call(
            mcp, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55}
        )
        assert ended["status"] == "completed", ended
        analysis = await _call(mcp, "analyze_loss", {"operation_id": op})
        assert analysis["epochs_analyzed"] == 3
        # Its output, as the bridge kept it, read through the server like a local script's.
        logs = await _call(mcp, "get_operation_logs", {"operation_id": op, "tail": 2})
        assert [line.split(":")[0] for line in logs["lines"]] == ["epoch 2", "epoch 3"], logs
        newer = await _call(
            mcp, "get_operation_logs", {"operation_id": op, "cursor": logs["next_cursor"]}
        )
        assert (newer["lines"], newer["next_cursor"]) == ([], logs["next_cursor"]), newer
    response = await _http(
        "GET", f"{server.url}/api/v1/operations/{op}/metrics", params={"metrics": "val_loss"}
    )
    (series,) = response.json()["series"]
    assert series["steps"] == [1, 2, 3] and series["total_points"] == 3  # each epoch once
    # The bridge sampled the script's processes (not its own) as system/... metrics.
    response = await _http(
        "GET",
        f"{server.url}/api/v1/operations/{op}/metrics",
        params={"metrics": "system/"},
    )
    system = {series["name"]: series for series in response.json()["series"]}
    assert {"system/cpu_percent", "system/rss_mb"} <= system.keys(), system
    # (its last sample may read 0 MB: the script has exited, not yet reaped)
    assert max(system["system/rss_mb"]["values"]) > 10
    session = await _session(bridge, op)
    assert (session["status"], session["delivered"], session["epochs_total"]) == (
        "completed",
        True,
        3,
    )


async def test_a_failing_bridge_script_fails_with_its_stderr_tail(
    pair: tuple[Process, Process],
) -> None:
    _bridge, server = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await _call(mcp, "start_training", {"entry_point": "fails", "backend": "bridge"})
        ended = await _call(
            mcp,
            "wait_for_operation",
            {"operation_id": started["operation_id"], "until": "end", "timeout_s": 55},
        )
    assert ended["status"] == "failed", ended
    op = (await _http("GET", f"{server.url}/api/v1/operations/{started['operation_id']}")).json()
    assert op["error"] == (
        "the script ended with exit code 3; the end of its stderr:\nbad shape (3, 7)"
    ), op
    url = f"{server.url}/api/v1/operations/{started['operation_id']}/logs"
    stderr = (await _http("GET", url, params={"stream": "stderr"})).json()
    assert stderr["lines"] == ["bad shape (3, 7)"], stderr


async def test_a_bridge_script_fills_the_bridge_and_is_stopped_by_stop_training(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await _call(
            mcp, "start_training", {"entry_point": "endless", "backend": "bridge"}
        )
        op = started["operation_id"]
        # The bridge takes one run at a time (--max-sessions 1): the script holds its slot.
        full = await _refused(mcp, {"entry_point": "endless", "backend": "bridge"})
        assert "full (1 runs training)" in full, full
        stopped = await _call(mcp, "stop_training", {"operation_id": op, "reason": "enough"})
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough"), stopped
    session = await _session(bridge, op)
    assert (session["status"], session["reason"]) == ("cancelled", "enough")
    health = (await _http("GET", f"{bridge.url}/health")).json()
    assert health["sessions_running"] == 0


async def test_bad_params_and_entry_points_the_bridge_lacks_are_refused_by_name(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        bad = await _refused(
            mcp, {"entry_point": "plain", "params": {"epochs": 99}, "backend": "bridge"}
        )
        assert "params.epochs: must be an integer between 1 and 20, got 99" in bad, bad
        tb = await _refused(mcp, {"entry_point": "tb", "backend": "bridge"})
        assert "backend: entry point 'tb' declares a tensorboard_logdir" in tb, tb
        lacking = await _refused(mcp, {"entry_point": "server_only", "backend": "bridge"})
        assert "'server_only' is not declared on this bridge; declared: endless, fails, plain" in (
            lacking
        ), lacking
    # The bridge checks parameters itself too, whatever a server sends.
    request = {
        "operation_id": "direct-1",
        "script": {"entry_point": "plain", "params": {"epochs": 0}},
        "server_url": server.url,
    }
    response = await _http("POST", f"{bridge.url}/sessions", json=request)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "params.epochs"


async def test_the_bridges_logs_route_refuses_bad_queries_and_unknown_sessions_by_name(
    pair: tuple[Process, Process],
) -> None:
    bridge, server = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await _call(mcp, "start_training", {"entry_point": "fails", "backend": "bridge"})
        op = started["operation_id"]
        await _call(mcp, "wait_for_operation", {"operation_id": op, "until": "end"})
    url = f"{bridge.url}/sessions/{op}/logs"
    for params, field in (
        ({"stream": "stdin"}, "stream"),
        ({"tail": "many"}, "tail"),
        ({"tail": 0}, "tail"),
        ({"cursor": -1}, "cursor"),
        ({"lines": 5}, "lines"),
    ):
        response = await _http("GET", url, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field, (params, response.text)
    missing = await _http("GET", f"{bridge.url}/sessions/op-nosuchrun/logs")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "operation_id"
    ok = await _http("GET", url, params={"stream": "stderr", "tail": 5})
    assert ok.status_code == 200 and ok.json()["lines"] == ["bad shape (3, 7)"], ok.text
