"""Script runs end to end, CPU only: declared entry points started by `start_training` through a
real MCP client, their processes pushing to the real server over loopback HTTP, then watched,
stopped, killed or failed, and their logs read."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.scripts.conftest import ROOT, ScriptServer
from tests.tool_calls import call_tool as _call
from tests.tool_calls import tool_text as _text

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[ScriptServer]]

LONG = """
import sys, time, training_mcp
run = training_mcp.init()
for epoch in range(1, 100_000):
    run.log(epoch, train_loss=1.0 / epoch)
    run.reporter.flush()
    print("epoch", epoch, flush=True)
    time.sleep(0.02)  # the script's own pace, not the test's
"""

STUBBORN = """
import os, signal, time, training_mcp
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(os.getpid(), flush=True)
run = training_mcp.init()
run.log(1, train_loss=0.5)
run.reporter.flush()
while True:
    time.sleep(0.05)
"""

POLITE = """
import signal, time, training_mcp
signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the stop request can end it in time
run = training_mcp.init()
epoch = 0
while not run.should_stop:
    epoch += 1
    run.log(epoch, train_loss=1.0 / epoch)
    time.sleep(0.02)
print("stopped after epoch", epoch, "because", run.stop_reason, flush=True)
"""

FAILS = """
import sys
print("loading data", flush=True)
print("Traceback (most recent call last):", file=sys.stderr)
print("ValueError: bad batch shape (3, 7)", file=sys.stderr)
sys.exit(3)
"""


def _declare(folder: Path, scripts: dict[str, str]) -> Path:
    lines = []
    for name, body in scripts.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
        lines.append(f'[entry_points.{name}]\ncommand = ["python", "{name}.py"]\n')
    path = folder / "entry_points.toml"
    path.write_text("\n".join(lines))
    return path


async def _wait(client: Client, op: str, until: str = "end") -> dict[str, Any]:
    return await _call(
        client, "wait_for_operation", {"operation_id": op, "until": until, "timeout_s": 55}
    )


async def test_the_plain_pytorch_example_runs_to_the_end_stored_and_analysed(
    start_server: Start,
) -> None:
    async with start_server(ROOT / "examples/scripts/entry_points.toml") as server:
        listed = await _call(server.client, "list_entry_points", {})
        names = {e["name"]: e for e in listed["entry_points"]}
        assert "plain_pytorch" in names
        params = {p["name"]: p for p in names["plain_pytorch"]["parameters"]}
        assert (params["epochs"]["min"], params["epochs"]["max"]) == (1, 200)

        started = await _call(
            server.client,
            "start_training",
            {"entry_point": "plain_pytorch", "params": {"epochs": 4, "hidden": 8}},
        )
        op = started["operation_id"]
        assert (started["backend"], started["epochs_total"]) == ("script", 4)
        waited = await _wait(server.client, op)
        assert waited["status"] == "completed", waited
        metrics = await _call(
            server.client,
            "get_operation_metrics",
            {"operation_id": op, "metrics": ["val_loss", "step/train_loss"]},
        )
        series = {s["name"]: s for s in metrics["series"]}
        assert series["val_loss"]["steps"] == [1, 2, 3, 4]
        assert series["step/train_loss"]["total_points"] == 4 * 6
        analysis = await _call(server.client, "analyze_loss", {"operation_id": op})
        assert analysis["epochs_analyzed"] == 4
        logs = await _call(server.client, "get_operation_logs", {"operation_id": op})
        assert logs["lines"][-1].startswith("epoch 4: train_loss")
        op_info = await _call(server.client, "get_operation", {"operation_id": op})
        assert op_info["spec"]["argv"][:2] == ["python", "plain_pytorch.py"]
        assert op_info["spec"]["params"] == {"learning_rate": 0.05, "epochs": 4, "hidden": 8}


async def test_bad_parameters_are_refused_naming_the_parameter(start_server: Start) -> None:
    async with start_server(ROOT / "examples/scripts/entry_points.toml") as server:
        cases = [
            ({"epochs": 0}, "params.epochs: must be an integer between 1 and 200, got 0"),
            ({"learning_rate": "fast"}, "params.learning_rate: must be a number"),
            ({"batch": 3}, "params.batch: unknown parameter of entry point 'plain_pytorch'"),
        ]
        for params, message in cases:
            result = await server.client.call_tool(
                "start_training", {"entry_point": "plain_pytorch", "params": params}
            )
            assert result.is_error and message in _text(result), _text(result)
        unknown = await server.client.call_tool("start_training", {"entry_point": "rm -rf"})
        assert unknown.is_error and "entry_point: 'rm -rf' is not declared" in _text(unknown)
        runs = await _call(server.client, "list_operations", {})
        assert runs["returned"] == 0  # nothing refused was started or stored


async def test_a_stopped_script_is_gone_at_sigint_and_its_run_cancelled(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path, {"long": LONG}), grace_s=30.0) as server:
        op = (await _call(server.client, "start_training", {"entry_point": "long"}))["operation_id"]
        await _wait(server.client, op, until="next_epoch")
        stopped = await _call(
            server.client, "stop_training", {"operation_id": op, "reason": "enough"}
        )
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
        # SIGINT ended it (Python's KeyboardInterrupt), long before the 30 s grace ran out.
        stderr = await _call(
            server.client, "get_operation_logs", {"operation_id": op, "stream": "stderr"}
        )
        assert stderr["lines"][-1] == "KeyboardInterrupt"
        assert stopped["epochs_done"] >= 1


async def test_a_script_reads_the_stop_request_from_its_push_answers_and_ends_itself(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path, {"polite": POLITE}), grace_s=60.0) as server:
        op = (await _call(server.client, "start_training", {"entry_point": "polite"}))[
            "operation_id"
        ]
        await _wait(server.client, op, until="next_epoch")
        stopped = await _call(
            server.client, "stop_training", {"operation_id": op, "reason": "enough"}
        )
        # It ignores SIGINT and SIGTERM would come only after 60 s: the request ended it.
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
        stdout = await _call(server.client, "get_operation_logs", {"operation_id": op})
        last = stdout["lines"][-1]
        assert last.startswith("stopped after epoch") and last.endswith("because enough"), last
        assert stopped["epochs_done"] == int(last.split()[3])


async def test_a_script_that_ignores_signals_is_killed(tmp_path: Path, start_server: Start) -> None:
    async with start_server(_declare(tmp_path, {"stubborn": STUBBORN}), grace_s=0.5) as server:
        op = (await _call(server.client, "start_training", {"entry_point": "stubborn"}))[
            "operation_id"
        ]
        await _wait(server.client, op, until="next_epoch")
        stdout = await _call(server.client, "get_operation_logs", {"operation_id": op})
        pid = int(stdout["lines"][0])
        stopped = await _call(server.client, "stop_training", {"operation_id": op})
        assert stopped["status"] == "cancelled"
        assert _gone(pid)


SAVER = """
import signal, sys, time, training_mcp

def save(signum, frame):
    print("saving", flush=True)
    time.sleep(1.5)  # a checkpoint that takes longer than the server's --script-grace
    print("saved", flush=True)
    sys.exit(0)

signal.signal(signal.SIGINT, save)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
run = training_mcp.init()
run.log(1, train_loss=0.5)
run.reporter.flush()
while True:
    time.sleep(0.05)
"""


async def test_an_entry_points_stop_grace_gives_its_script_the_time_it_declared(
    tmp_path: Path, start_server: Start
) -> None:
    (tmp_path / "saver.py").write_text(textwrap.dedent(SAVER))
    declared = tmp_path / "entry_points.toml"
    declared.write_text(
        '[entry_points.patient]\ncommand = ["python", "saver.py"]\nstop_grace_s = 30\n'
        '[entry_points.hasty]\ncommand = ["python", "saver.py"]\n'
    )
    async with start_server(declared, grace_s=0.5) as server:
        saved = {}
        for entry in ("patient", "hasty"):
            started = await _call(server.client, "start_training", {"entry_point": entry})
            op = started["operation_id"]
            await _wait(server.client, op, until="next_epoch")
            stopped = await _call(server.client, "stop_training", {"operation_id": op})
            assert stopped["status"] == "cancelled", stopped
            logs = await _call(server.client, "get_operation_logs", {"operation_id": op})
            saved[entry] = logs["lines"]
        listed = await _call(server.client, "list_entry_points", {})
    # 30 s per signal: the save finished after SIGINT. 0.5 s: SIGTERM came in the middle.
    assert saved == {"patient": ["saving", "saved"], "hasty": ["saving"]}, saved
    assert "stop_grace_s" not in str(listed)  # the operator's setting, not the agent's


def _gone(pid: int) -> bool:
    """Not running: no such process, or dead and waiting for init to reap it (the relay that
    was its parent was killed with it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


async def test_a_failing_script_fails_its_run_with_the_end_of_its_stderr(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path, {"fails": FAILS})) as server:
        op = (await _call(server.client, "start_training", {"entry_point": "fails"}))[
            "operation_id"
        ]
        waited = await _wait(server.client, op)
        assert waited["status"] == "failed"
        info = await _call(server.client, "get_operation", {"operation_id": op})
        assert info["error"].startswith("the script ended with exit code 3")
        assert info["error"].endswith("ValueError: bad batch shape (3, 7)")
        logs = await _call(server.client, "get_operation_logs", {"operation_id": op, "tail": 1})
        assert logs["lines"] == ["loading data"]


async def test_a_script_that_only_writes_tensorboard_scalars_is_ingested(
    tmp_path: Path, start_server: Start
) -> None:
    pytest.importorskip("tensorboard")
    folder = tmp_path / "scripts"
    shutil.copytree(ROOT / "examples/scripts", folder, ignore=shutil.ignore_patterns("runs"))
    async with start_server(folder / "entry_points.toml") as server:
        started = await _call(
            server.client,
            "start_training",
            {"entry_point": "tensorboard_only", "params": {"epochs": 6}},
        )
        op = started["operation_id"]
        waited = await _wait(server.client, op)
        assert waited["status"] == "completed", waited
        metrics = await _call(
            server.client, "get_operation_metrics", {"operation_id": op, "metrics": ["val_loss"]}
        )
        assert metrics["series"][0]["steps"] == [1, 2, 3, 4, 5, 6]
        assert metrics["epochs_done"] == 6
        analysis = await _call(server.client, "analyze_loss", {"operation_id": op})
        assert analysis["epochs_analyzed"] == 6
        assert (folder / "runs" / op).is_dir()


async def _completes_with_callback_metrics(
    server: ScriptServer, entry_point: str, epochs: int
) -> dict[str, dict[str, Any]]:
    done = await _call(
        server.client, "start_training", {"entry_point": entry_point, "params": {"epochs": epochs}}
    )
    waited = await _wait(server.client, done["operation_id"])
    assert waited["status"] == "completed", waited
    metrics = await _call(
        server.client,
        "get_operation_metrics",
        {
            "operation_id": done["operation_id"],
            "metrics": ["train_loss", "val_loss", "learning_rate", "step/train_loss"],
        },
    )
    return {s["name"]: s for s in metrics["series"]}


async def _stops_at_a_step_boundary(server: ScriptServer, entry_point: str, epochs: int) -> None:
    long = await _call(
        server.client, "start_training", {"entry_point": entry_point, "params": {"epochs": epochs}}
    )
    op = long["operation_id"]
    await _wait(server.client, op, until="next_epoch")
    stopped = await _call(server.client, "stop_training", {"operation_id": op})
    assert stopped["status"] == "cancelled"
    assert stopped["epochs_done"] < epochs
    # The callback ended training at a step boundary: no KeyboardInterrupt raised.
    stderr = await _call(
        server.client, "get_operation_logs", {"operation_id": op, "stream": "stderr"}
    )
    assert not any("KeyboardInterrupt" in line for line in stderr["lines"]), stderr


async def test_a_lightning_script_reports_through_its_callback_and_stops_at_a_step(
    start_server: Start,
) -> None:
    pytest.importorskip("lightning")
    async with start_server(ROOT / "examples/scripts/entry_points.toml") as server:
        series = await _completes_with_callback_metrics(server, "lightning_mlp", 3)
        assert series["val_loss"]["steps"] == [1, 2, 3]
        assert series["train_loss"]["steps"] == [1, 2, 3]
        assert series["learning_rate"]["values"] == [0.05, 0.05, 0.05]
        assert series["step/train_loss"]["total_points"] == 3 * 6
        await _stops_at_a_step_boundary(server, "lightning_mlp", 10000)


async def test_a_hugging_face_trainer_reports_through_its_callback_and_stops_at_a_step(
    start_server: Start,
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    async with start_server(ROOT / "examples/scripts/entry_points.toml") as server:
        series = await _completes_with_callback_metrics(server, "huggingface_tiny", 2)
        assert series["val_loss"]["steps"] == [1, 2]
        assert series["train_loss"]["steps"] == [1, 2]
        assert series["learning_rate"]["steps"] == [1, 2]
        assert series["step/train_loss"]["total_points"] == 2 * 6  # 192 samples / 32
        await _stops_at_a_step_boundary(server, "huggingface_tiny", 1000)
