"""Real clients against a real `training-mcp serve` subprocess over stdio."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ResourceUpdatedNotification, TextResourceContents

from tests.mcp_server.conftest import TINY

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _params(data_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server.cli", "serve", "--data-dir", str(data_dir)],
        cwd=str(ROOT),
    )


async def test_legacy_session_gets_an_update_for_every_epoch_of_a_real_run(
    tmp_path: Path,
) -> None:
    updates: list[str] = []
    five_epochs = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            if updates.count(updates[-1]) >= 5 and updates[-1].endswith("/metrics"):
                five_epochs.set()

    async with (
        stdio_client(_params(tmp_path)) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"
        caps = init.capabilities.resources
        assert caps is not None and caps.subscribe and caps.list_changed
        started = await session.call_tool("start_training", {**TINY, "epochs": 5})
        assert started.structured_content is not None
        op = started.structured_content["operation_id"]
        uri = f"training://operations/{op}/metrics"
        with pytest.warns(MCPDeprecationWarning):
            await session.subscribe_resource(uri)
        waited = await session.call_tool(
            "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55}
        )
        assert waited.structured_content and waited.structured_content["status"] == "completed"
        with anyio.fail_after(10):
            await five_epochs.wait()
        read_back = await session.read_resource(uri)
    content = read_back.contents[0]
    assert isinstance(content, TextResourceContents)
    assert json.loads(content.text)["epochs_done"] == 5
    assert updates.count(uri) >= 5  # one per epoch, one more for the final status


async def test_modern_client_listens_and_gets_every_epoch(tmp_path: Path) -> None:
    async with Client(_params(tmp_path)) as client:
        assert client.protocol_version == "2026-07-28"
        started = await client.call_tool("start_training", {**TINY, "epochs": 5})
        assert started.structured_content is not None
        op = started.structured_content["operation_id"]
        uri = f"training://operations/{op}/metrics"
        epochs_seen: set[int] = set()
        async with client.listen(resource_subscriptions=[uri]) as events:
            with anyio.fail_after(60):
                async for _event in events:
                    info = await client.call_tool("get_operation", {"operation_id": op})
                    assert info.structured_content is not None
                    epochs_seen.add(info.structured_content["epochs_done"])
                    if info.structured_content["status"] == "completed":
                        break
    assert max(epochs_seen) == 5


async def test_a_restart_marks_runs_left_running_as_interrupted(tmp_path: Path) -> None:
    async with Client(_params(tmp_path)) as client:
        started = await client.call_tool("start_training", {**TINY, "epochs": 100_000})
        assert started.structured_content is not None
        op = started.structured_content["operation_id"]
        await client.call_tool("wait_for_operation", {"operation_id": op, "until": "next_epoch"})
    # Closing the client ends the server; a killed server leaves the run 'running' or
    # 'interrupted' (a clean shutdown). Either way the next start must not show it running.
    async with Client(_params(tmp_path)) as client:
        info = await client.call_tool("get_operation", {"operation_id": op})
    assert info.structured_content is not None
    assert info.structured_content["status"] == "interrupted"
    assert "epochs" in info.structured_content["reason"]


INSPECTOR = ROOT / ".cache" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"


@pytest.mark.skipif(
    not INSPECTOR.exists() or shutil.which("node") is None,
    reason="the MCP Inspector is not installed (make test installs it with npm)",
)
def test_the_inspector_cli_lists_tools_and_starts_training(tmp_path: Path) -> None:
    base = [
        str(INSPECTOR),
        "--cli",
        sys.executable,
        "-m",
        "mcp_server.cli",
        "serve",
        "--data-dir",
        str(tmp_path),
    ]
    listed = subprocess.run(
        [*base, "--method", "tools/list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert "start_training" in names
    called = subprocess.run(
        [
            *base,
            "--method",
            "tools/call",
            "--tool-name",
            "start_training",
            "--tool-args-json",
            json.dumps({"dataset": "blobs", "epochs": 1}),
            "--format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(called.stdout)["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["operation_id"].startswith("op-")
