"""A bridge killed -9 under a running script: a real `training-mcp serve --http` and `training-mcp
bridge` on loopback. The script must not go on training for a bridge that is gone (no one would
report its end, stop it or take its pushes), and the server fails the run as `bridge lost`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.host_bridge import processes
from tests.host_bridge.processes import Process, exits_within, poll_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform != "linux", reason="prctl's parent-death signal"),
]

TOKEN = "bridge-token"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Process, Process, Path]]:
    pidfile = tmp_path / "script.pid"
    write_pid = f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))"
    script = f"import os, time; {write_pid}; time.sleep(600)"
    declared = f"""
[entry_points.endless]
command = [{sys.executable!r}, "-c", {script!r}]
"""
    (tmp_path / "entry_points.toml").write_text(declared)
    bridge = processes.bridge(tmp_path, TOKEN)
    bridge.args += ["--entry-points", str(tmp_path / "entry_points.toml")]
    server = processes.server(tmp_path, [(bridge.url, TOKEN)], heartbeat_timeout_s=2.0)
    server.args += ["--entry-points", str(tmp_path / "entry_points.toml")]
    with processes.running(bridge, server):
        yield bridge, server, pidfile


async def _call(mcp: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await mcp.call_tool(tool, args)
    text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
    assert not result.is_error and result.structured_content is not None, text
    return dict(result.structured_content)


async def test_a_script_ends_with_its_bridge_killed_9_and_the_run_fails_bridge_lost(
    pair: tuple[Process, Process, Path],
) -> None:
    bridge, server, pidfile = pair
    async with Client(streamable_http_client(f"{server.url}/mcp")) as mcp:
        started = await _call(
            mcp, "start_training", {"entry_point": "endless", "backend": "bridge"}
        )
        op = started["operation_id"]
        poll_until(lambda: pidfile.exists() and pidfile.read_text() != "", 30, bridge)
        script = int(pidfile.read_text())
        assert not exits_within(script, 0.0), "the script is running"
        bridge.stop(kill=True)
        assert exits_within(script, 10.0), "the script outlived its bridge"
        await _call(
            mcp, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 30}
        )
        ended = await _call(mcp, "get_operation", {"operation_id": op})
        logs = await mcp.call_tool("get_operation_logs", {"operation_id": op})
    assert logs.is_error, logs
    text = " ".join(c.text for c in logs.content if isinstance(c, TextContent))
    assert f"the bridge at {bridge.url} did not give the run's logs" in text, text
    assert ended["status"] == "failed" and ended["error"].startswith("bridge lost: "), ended
