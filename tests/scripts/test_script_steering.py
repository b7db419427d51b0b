"""Resume and fork of script runs, end to end: a real declared script saving checkpoints through
the client, made to fail mid-run, resumed through a real MCP client in the same operation, then
forked with a changed parameter; and what is refused, by field, with nothing stored lost."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from storage import Backend, create_operation
from tests.scripts.conftest import ScriptServer, end_scripts_left
from tests.tool_calls import call_tool as _call
from tests.tool_calls import tool_text as _text
from trainer.checkpoint_budget import CheckpointBudget

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[ScriptServer]]

# Stdlib and the client only: a "model" of one weight that grows by lr each epoch, its state the
# checkpoint's bytes, so each epoch's loss shows which state it went on from.
COUNTER = """
import argparse, json, pathlib, sys, time, training_mcp

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--lr", type=float)
args = parser.parse_args()
run = training_mcp.init()
start = run.resume_from()
weight, first = 0.0, 1
if start is not None:
    weight, first = json.loads(start.read_bytes())["weight"], start.epoch + 1
print("from epoch", first - 1, flush=True)
cue, hold = pathlib.Path("fail_at"), pathlib.Path("hold_at")
for epoch in range(first, args.epochs + 1):
    if cue.exists() and epoch == int(cue.read_text()):
        run.reporter.flush()
        sys.exit(f"crashed in epoch {epoch}")
    if hold.exists() and epoch == int(hold.read_text()):
        run.reporter.flush()
        while True:  # until it is killed
            time.sleep(1)
    weight += args.lr
    run.log(epoch, train_loss=1.0 / (1.0 + weight))
    run.save_checkpoint(epoch, json.dumps({"weight": weight}).encode(), best=epoch % 2 == 0)
run.finish()
"""

NO_SAVES = """
import sys, training_mcp
run = training_mcp.init()
run.log(1, train_loss=0.5)
run.reporter.flush()
sys.exit("crashed before any checkpoint")
"""


def _declare(folder: Path) -> Path:
    (folder / "counter.py").write_text(textwrap.dedent(COUNTER))
    (folder / "no_saves.py").write_text(textwrap.dedent(NO_SAVES))
    path = folder / "entry_points.toml"
    path.write_text(
        '[entry_points.counter]\ncommand = ["python", "counter.py", "--epochs", "{epochs}", '
        '"--lr", "{lr}"]\n'
        "[entry_points.counter.parameters]\n"
        'epochs = { type = "int", default = 6, min = 1, max = 100 }\n'
        'lr = { type = "float", default = 0.25, min = 0.0, max = 1.0 }\n'
        '[entry_points.no_saves]\ncommand = ["python", "no_saves.py"]\n'
    )
    return path


async def _refused(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    return _text(result).removeprefix(f"Error executing tool {tool}: ")


async def _ended(client: Client, op: str) -> dict[str, Any]:
    return await _call(
        client, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55}
    )


async def _losses(client: Client, op: str) -> dict[int, float]:
    metrics = await _call(
        client, "get_operation_metrics", {"operation_id": op, "metrics": ["train_loss"]}
    )
    series = metrics["series"][0]
    return dict(zip(series["steps"], series["values"], strict=True))


def _loss(weight: float) -> float:
    return 1.0 / (1.0 + weight)


async def _held_after_epoch_2(server: ScriptServer) -> str:
    """A counter run started with `hold_at` 3, once it has stored epoch 2."""
    started = await _call(server.client, "start_training", {"entry_point": "counter"})
    op = str(started["operation_id"])
    await _call(
        server.client,
        "wait_for_operation",
        {"operation_id": op, "until": "epochs", "epochs": 2, "timeout_s": 55},
    )
    return op


async def _failed_at_epoch_4(server: ScriptServer, tmp_path: Path) -> str:
    (tmp_path / "fail_at").write_text("4")
    started = await _call(server.client, "start_training", {"entry_point": "counter"})
    op = started["operation_id"]
    assert (await _ended(server.client, op))["status"] == "failed"
    return str(op)


async def test_a_failed_script_run_resumes_from_its_checkpoint_and_ends_with_the_whole_history(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path)) as server:
        op = await _failed_at_epoch_4(server, tmp_path)
        failed = await _call(server.client, "get_operation", {"operation_id": op})
        assert failed["epochs_done"] == 3 and "crashed in epoch 4" in failed["error"]
        index = json.loads((tmp_path / "data/artifacts" / op / "checkpoints.json").read_text())
        assert (index["epochs"], index["last"], index["best"]) == ([1, 2, 3], 3, 2)

        (tmp_path / "fail_at").unlink()
        resumed = await _call(server.client, "resume_training", {"operation_id": op})
        assert (resumed["operation_id"], resumed["backend"]) == (op, "script")
        ended = await _ended(server.client, op)
        assert (ended["status"], ended["epochs_done"]) == ("completed", 6), ended

        # Epochs 4-6 went on from epoch 3's weight (0.75), not from a fresh start.
        losses = await _losses(server.client, op)
        assert losses == pytest.approx({e: _loss(0.25 * e) for e in range(1, 7)})
        stdout = await _call(server.client, "get_operation_logs", {"operation_id": op})
        assert stdout["lines"] == ["from epoch 0", "from epoch 3"]
        info = await _call(server.client, "get_operation", {"operation_id": op})
        assert info["error"] is None and info["reason"] == "resumed from the checkpoint of epoch 3"
        index = json.loads((tmp_path / "data/artifacts" / op / "checkpoints.json").read_text())
        assert (index["epochs"], index["last"], index["best"]) == ([1, 2, 3, 4, 5, 6], 6, 6)

        refused = await _refused(server.client, "resume_training", {"operation_id": op})
        assert refused.startswith(f"operation_id: {op!r} is completed"), refused


async def test_a_script_run_the_server_lost_is_resumed_by_the_next_server(
    tmp_path: Path, start_server: Start
) -> None:
    """Killed while no server followed it: the next server marks it interrupted, and
    `--resume-interrupted` (`resume_interrupted`) starts it again from its last checkpoint."""
    entry_points = _declare(tmp_path)
    (tmp_path / "hold_at").write_text("3")
    async with start_server(entry_points) as server:
        op = await _held_after_epoch_2(server)
        scripts = server.service._scripts
        assert scripts is not None
        relay = scripts._live[op].popen  # this process's child: reaped below
    # The script outlived its server, holding in epoch 3; now it dies too.
    end_scripts_left(tmp_path / "data/logs")
    assert relay is not None and relay.wait() == -signal.SIGKILL
    (tmp_path / "hold_at").unlink()
    async with start_server(entry_points) as server:
        lost = await _call(server.client, "get_operation", {"operation_id": op})
        assert (lost["status"], lost["epochs_done"]) == ("interrupted", 2), lost
        assert await server.service.resume_interrupted() == [op]
        ended = await _ended(server.client, op)
        assert (ended["status"], ended["epochs_done"]) == ("completed", 6), ended
        losses = await _losses(server.client, op)
        assert losses == pytest.approx({e: _loss(0.25 * e) for e in range(1, 7)})


async def test_a_script_run_forks_from_a_checkpoint_epoch_with_a_changed_parameter(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path)) as server:
        parent = (await _call(server.client, "start_training", {"entry_point": "counter"}))[
            "operation_id"
        ]
        assert (await _ended(server.client, parent))["status"] == "completed"
        forked = await _call(
            server.client,
            "fork_training",
            {"operation_id": parent, "from_epoch": 2, "changes": {"lr": 0.5, "epochs": 5}},
        )
        child = forked["operation_id"]
        assert forked["lineage"] == {
            "parent_id": parent,
            "from_epoch": 2,
            "changes": {"lr": 0.5, "epochs": 5},
        }
        assert (await _ended(server.client, child))["status"] == "completed"
        losses = await _losses(server.client, child)
        # Epochs 1-2 copied from the parent (lr 0.25), then 3-5 at lr 0.5 from epoch 2's weight.
        expected = {1: _loss(0.25), 2: _loss(0.5), 3: _loss(1.0), 4: _loss(1.5), 5: _loss(2.0)}
        assert losses == pytest.approx(expected)
        info = await _call(server.client, "get_operation", {"operation_id": child})
        assert info["spec"]["params"] == {"epochs": 5, "lr": 0.5}
        assert info["name"] == "counter fork@2"
        assert (await _losses(server.client, parent)) == pytest.approx(
            {e: _loss(0.25 * e) for e in range(1, 7)}
        )  # the parent's history as it was

        # from_epoch "best": the epoch its script last marked best, 6, its last: train on.
        text = await _refused(server.client, "fork_training", {"operation_id": parent})
        assert text.startswith("changes.epochs: the fork goes on after epoch 6"), text
        more = {"operation_id": parent, "changes": {"epochs": 8}}
        best = await _call(server.client, "fork_training", more)
        assert best["lineage"] == {"parent_id": parent, "from_epoch": 6, "changes": {"epochs": 8}}
        assert (await _ended(server.client, best["operation_id"]))["epochs_done"] == 8


async def test_what_a_script_run_cannot_be_resumed_or_forked_with_is_refused_by_field(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path)) as server:
        op = await _failed_at_epoch_4(server, tmp_path)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"changes": {"batch": 3}}, "changes.batch: not a declared parameter of entry "),
            ({"changes": {"lr": 5.0}}, "changes.lr: must be a number between 0 and 1, got 5.0"),
            (
                {"from_epoch": 9},
                f"from_epoch: {op!r} has no checkpoint for epoch 9; checkpoints "
                "exist for epochs 2 (best), 3 (last), 1",
            ),
            ({"from_epoch": 3, "changes": {"epochs": 3}}, "changes.epochs: the fork goes on "),
            ({"changes": {"name": ""}}, "changes.name: must be a string of 1 to 200"),
        ]
        for args, message in cases:
            text = await _refused(
                server.client, "fork_training", {"operation_id": op, "from_epoch": 2, **args}
            )
            assert text.startswith(message), text

        none = (await _call(server.client, "start_training", {"entry_point": "no_saves"}))[
            "operation_id"
        ]
        assert (await _ended(server.client, none))["status"] == "failed"
        text = await _refused(server.client, "resume_training", {"operation_id": none})
        assert text.startswith(f"operation_id: {none!r} has no checkpoint to resume from"), text

        runs = await _call(server.client, "list_operations", {})
        assert runs["returned"] == 2  # nothing refused was started or stored
        info = await _call(server.client, "get_operation", {"operation_id": op})
        assert (info["status"], info["epochs_done"]) == ("failed", 3)

        # A script that ran on Ray or a bridge keeps its checkpoints there: refused, saying so.
        for backend in (Backend.RAY, Backend.BRIDGE):
            away = await create_operation(
                server.service._db,
                name="away",
                backend=backend,
                spec={"entry_point": "counter", "params": {}, "argv": []},
            )
            text = await _refused(
                server.client, "resume_training", {"operation_id": away.operation_id}
            )
            assert f"ran its script on a {backend.value} backend" in text, text


async def test_pruning_over_the_total_budget_leaves_a_running_script_runs_checkpoints(
    tmp_path: Path, start_server: Start
) -> None:
    """A local run ends with all checkpoints over the total budget: pruning deletes whole run
    folders, oldest first, but never the folder a running script is still saving into."""
    (tmp_path / "hold_at").write_text("3")
    tiny = CheckpointBudget(total=1)
    async with start_server(_declare(tmp_path), checkpoints=tiny) as server:
        script = await _held_after_epoch_2(server)
        artifacts = tmp_path / "data/artifacts"
        local = (await _call(server.client, "start_training", {"epochs": 2}))["operation_id"]
        assert (await _ended(server.client, local))["status"] == "completed"
        for _ in range(400):  # pruned just after the run's end is stored: the budget is 1 byte
            if not (artifacts / local).exists():
                break
            await anyio.sleep(0.05)
        assert not (artifacts / local).exists()
        index = json.loads((artifacts / script / "checkpoints.json").read_text())
        assert index["epochs"] == [1, 2]  # the older folder, kept while its script runs
        stopped = await _call(server.client, "stop_training", {"operation_id": script})
        assert stopped["operation_id"] == script
