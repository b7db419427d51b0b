"""A real `training-mcp serve` process killed with SIGKILL while script runs train, restarted on
the same data directory and followed through a real MCP client: a script whose process lives is
followed again (every epoch it pushed, before, during and after the outage, stored exactly once;
its logs go on; it completes, or is stopped by its process group), and one whose process ended
meanwhile is marked interrupted."""

from __future__ import annotations

import os
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.core.relay import PROCESS_FILE, read_json_file
from tests.host_bridge.processes import Process, poll_until, running, server
from tests.scripts.conftest import end_scripts_left

EPOCHS = 12

# Epochs 1-4 reach the first server; 5-8 are logged while no server answers (the client keeps
# them queued and retries); 9-12 go to the second. The files are the test's cues, so the outage
# falls where it should whatever the machine's speed.
SURVIVOR = """
import pathlib, time, training_mcp
cue = pathlib.Path({cues!r})
run = training_mcp.init()
for epoch in range(1, {epochs} + 1):
    run.log(epoch, train_loss=1.0 / epoch, val_loss=1.2 / epoch)
    print("epoch", epoch, flush=True)
    if epoch == 4:
        run.reporter.flush()
        while not (cue / "killed").exists():
            time.sleep(0.02)
    if epoch == 8:
        while not (cue / "restarted").exists():
            time.sleep(0.02)
run.finish()
print("done", flush=True)
"""

# Ends by itself while no server follows it.
ENDS_UNWATCHED = """
import pathlib, time, training_mcp
cue = pathlib.Path({cues!r})
run = training_mcp.init()
run.log(1, train_loss=0.5)
run.reporter.flush()
while not (cue / "killed").exists():
    time.sleep(0.02)
"""

# Trains until stopped.
LONG = """
import time, training_mcp
run = training_mcp.init()
for epoch in range(1, 100_000):
    run.log(epoch, train_loss=1.0 / epoch)
    time.sleep(0.05)
"""


def _declare(folder: Path, cues: Path) -> Path:
    scripts = {"survivor": SURVIVOR, "ends_unwatched": ENDS_UNWATCHED, "long": LONG}
    lines = []
    for name, body in scripts.items():
        text = textwrap.dedent(body).format(cues=str(cues), epochs=EPOCHS)
        (folder / f"{name}.py").write_text(text)
        lines.append(f'[entry_points.{name}]\ncommand = ["python", "{name}.py"]\n')
    path = folder / "entry_points.toml"
    path.write_text("\n".join(lines))
    return path


def _op(base: str, operation_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/api/v1/operations/{operation_id}").json()
    return body


def _has_epochs(base: str, operation_id: str, epochs: int) -> bool:
    return int(_op(base, operation_id)["epochs_done"]) >= epochs


def _start(base: str, entry_point: str) -> str:
    started = httpx.post(f"{base}/api/v1/operations", json={"entry_point": entry_point})
    assert started.status_code == 202, started.text
    return str(started.json()["operation_id"])


def _serve(tmp_path: Path, entry_points: Path, port: int | None = None) -> Process:
    process = server(tmp_path, [], port=port)
    process.args += ["--entry-points", str(entry_points), "--max-concurrent-runs", "3"]
    return process


def test_script_runs_survive_a_killed_server_and_are_reattached_by_the_next(
    tmp_path: Path,
) -> None:
    cues = tmp_path / "cues"
    cues.mkdir()
    entry_points = _declare(tmp_path, cues)
    try:
        _kill_restart_and_follow(tmp_path, entry_points, cues)
    finally:
        end_scripts_left(tmp_path / "server" / "logs")


def _kill_restart_and_follow(tmp_path: Path, entry_points: Path, cues: Path) -> None:
    first = _serve(tmp_path, entry_points)
    with running(first):
        survivor = _start(first.url, "survivor")
        unwatched = _start(first.url, "ends_unwatched")
        long = _start(first.url, "long")
        for each in (survivor, unwatched, long):
            poll_until(partial(_has_epochs, first.url, each, 1), 60, first)
        poll_until(partial(_has_epochs, first.url, survivor, 4), 60, first)
        first.stop(kill=True)
    (cues / "killed").touch()  # the survivor logs epochs 5-8 with no server to take them
    relays = tmp_path / "server" / "logs"
    poll_until(lambda: (relays / unwatched / "exit.json").exists(), 60)
    poll_until(lambda: "epoch 8" in (relays / survivor / "stdout.log").read_text(), 60)

    second = _serve(tmp_path, entry_points, port=int(first.url.rsplit(":", 1)[1]))
    pid = read_json_file(relays / long / PROCESS_FILE)["pid"]  # type: ignore[index]
    with running(second):
        anyio.run(_follow_over_mcp, second.url, cues, (survivor, unwatched, long))
    assert _not_running(pid)


async def _follow_over_mcp(url: str, cues: Path, ops: tuple[str, str, str]) -> None:
    """The restarted server, through a real MCP client."""
    survivor, unwatched, long = ops
    async with Client(streamable_http_client(f"{url}/mcp")) as mcp:

        async def call(tool: str, **args: Any) -> dict[str, Any]:
            result = await mcp.call_tool(tool, args)
            assert not result.is_error and result.structured_content is not None, result
            return dict(result.structured_content)

        ended = await call("get_operation", operation_id=unwatched)
        assert ended["status"] == "interrupted", ended
        assert "it ended with exit code 0 unwatched" in ended["reason"]
        assert (await call("get_operation", operation_id=survivor))["status"] == "running"
        (cues / "restarted").touch()  # re-attached: the survivor may go on
        waited = await call("wait_for_operation", operation_id=survivor, until="end", timeout_s=55)
        assert waited["status"] == "completed", waited
        op = await call("get_operation", operation_id=survivor)
        assert (op["epochs_done"], op["error"]) == (EPOCHS, None)
        metrics = await call(
            "get_operation_metrics", operation_id=survivor, metrics=["train_loss", "val_loss"]
        )
        for series in metrics["series"]:
            assert series["steps"] == list(range(1, EPOCHS + 1)), series
            assert series["total_points"] == EPOCHS  # each once: retried pushes stored once
        analysis = await call("analyze_loss", operation_id=survivor)
        if analysis["epochs_analyzed"] != EPOCHS:
            full = await call("analyze_loss", operation_id=survivor, detail="full")
            raise AssertionError(f"{analysis}\n{full}\n{metrics}")
        logs = await call("get_operation_logs", operation_id=survivor, tail=100)
        assert logs["lines"] == [f"epoch {e}" for e in range(1, EPOCHS + 1)] + ["done"]

        # The re-attached long run is stopped through its process group by the new server.
        stopped = await call("stop_training", operation_id=long, reason="enough")
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")


def _not_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"
