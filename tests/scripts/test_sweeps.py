"""Sweeps over an entry point's declared parameters: the trials are real script runs pushing to a
real server over loopback HTTP, reported per epoch and pruned through stop_training; a space the
declaration does not allow is refused naming the parameter and what is allowed."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from mcp_server.config import ServerConfig
from mcp_server.core.errors import InvalidInputError
from mcp_server.core.service import open_service
from mcp_server.core.sweep_space import SweepRequest
from tests.mcp_server.sweep_wait import until_sweep_done
from tests.scripts.conftest import ScriptServer

pytest.importorskip("optuna")
pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[ScriptServer]]

# A made-up learning curve, so which trial is bad is known: best near lr 0.1, a wider model a
# little better. It flushes each epoch, so the server sees the curve as it is trained.
PACED = """
import argparse, math, time, training_mcp
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--width", type=int)
parser.add_argument("--epochs", type=int)
args = parser.parse_args()
with training_mcp.init() as run:
    for epoch in range(1, args.epochs + 1):
        val = abs(math.log10(args.lr) + 1.0) + 1.0 / epoch - args.width / 1000
        run.log(epoch, train_loss=val, val_loss=val)
        run.reporter.flush()
        time.sleep(0.05)  # the script's own pace
"""

DECLARED = """
[entry_points.paced]
command = ["python", "paced.py", "--lr", "{lr}", "--width", "{width}", "--epochs", "{epochs}"]
[entry_points.paced.parameters]
lr = { type = "float", default = 0.01, min = 1e-6, max = 1.0 }
width = { type = "int", default = 16, min = 1, max = 256 }
epochs = { type = "int", default = 20, min = 1, max = 100 }
mode = { type = "str", default = "a", choices = ["a", "b"] }
"""

SPACE: dict[str, Any] = {
    "lr": {"low": 1e-6, "high": 1.0, "log": True},
    "width": {"choices": [8, 64]},
}


def _declare(folder: Path) -> Path:
    (folder / "paced.py").write_text(textwrap.dedent(PACED))
    path = folder / "entry_points.toml"
    path.write_text(DECLARED)
    return path


async def test_a_sweep_over_an_entry_point_runs_scripts_and_prunes_a_bad_one(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path)) as server:
        service = server.service
        started = await server.client.call_tool(
            "start_sweep",
            {
                "base": {"entry_point": "paced", "params": {"epochs": 20}},
                "space": SPACE,
                "trials": 4,
                "parallel": 1,
                "pruner": "median",
                "sampler": "random",
                "seed": 0,
            },
        )
        assert not started.is_error, started.content
        assert started.structured_content is not None
        sweep_id = started.structured_content["sweep_id"]
        # Two good trials, then a bad one: the median pruner has two complete trials to
        # compare it with, whatever the sampler drew first.
        for lr in (0.1, 0.2, 1e-5):
            await service.enqueue_sweep_trial(sweep_id, {"lr": lr, "width": 8})
        sweep = await until_sweep_done(service, sweep_id, 120)

    assert sweep.status == "completed"
    assert sum(sweep.counts.values()) == 4 and sweep.counts.get("pruned", 0) >= 1
    assert sweep.leaderboard[0].state == "complete"
    assert set(sweep.importances) == {"lr", "width"}
    pruned = [e for e in sweep.leaderboard if e.state == "pruned"]
    assert {"lr": 1e-5, "width": 8} in [e.params for e in pruned]
    for entry in pruned:
        op = await service.get_operation(entry.operation_id or "")
        assert op.backend.value == "script" and op.status.value == "cancelled"
        assert "pruned by Optuna's median pruner" in (op.reason or "")
        assert (entry.epochs or 0) < 20  # stopped early, not trained out
    best = await service.get_operation(sweep.best_operation_id or "")
    assert best.tags["sweep"] == sweep_id and best.spec["params"]["epochs"] == 20
    assert best.spec["argv"][:2] == ["python", "paced.py"]


async def test_script_trials_beyond_the_concurrency_limit_wait_for_a_slot_not_fail(
    tmp_path: Path, start_server: Start
) -> None:
    async with start_server(_declare(tmp_path), max_concurrent_runs=1) as server:
        request = SweepRequest.model_validate(
            {"base": {"entry_point": "paced", "params": {"epochs": 3}},
             "space": {"lr": {"choices": [0.1, 0.01, 0.001]}}, "trials": 3, "parallel": 2,
             "sampler": "grid", "pruner": "none", "seed": 0}
        )  # fmt: skip
        sweep_id = (await server.service.start_sweep(request)).sweep_id
        sweep = await until_sweep_done(server.service, sweep_id, 120)
    # a script run finds the one slot taken where a local run would queue: its trial waits
    assert sweep.counts == {"complete": 3}, sweep.counts


@pytest.mark.parametrize(
    ("base", "space", "field", "words"),
    [
        ({}, {"depth": {"choices": [1, 2]}}, "space.depth", "declared: lr, width, epochs, mode"),
        ({}, {"lr": {"low": 1e-7, "high": 0.1}}, "space.lr", "between 1e-06 and 1"),
        ({}, {"width": {"low": 1, "high": 300, "int": True}}, "space.width", "between 1 and 256"),
        ({}, {"width": {"low": 1, "high": 8}}, "space.width", 'add "int": true'),
        ({}, {"mode": {"choices": ["a", 3]}}, "space.mode", "one of 'a', 'b'"),
        ({}, {"mode": {"low": 0, "high": 1}}, "space.mode", "takes choices"),
        ({"dataset": "blobs"}, {"lr": {"choices": [0.1]}}, "base.dataset", "only entry_point"),
        ({"params": {"epochs": 0}}, {"lr": {"choices": [0.1]}}, "base.params.epochs", "between"),
        ({"entry_point": "nope"}, {"lr": {"choices": [0.1]}}, "base.entry_point", "declared"),
    ],
)
async def test_a_space_the_declaration_does_not_allow_is_refused_naming_the_parameter(
    tmp_path: Path, base: dict[str, Any], space: dict[str, Any], field: str, words: str
) -> None:
    config = ServerConfig(
        data_dir=tmp_path / "data", data_roots=(tmp_path,), entry_points_file=_declare(tmp_path)
    )
    request = SweepRequest.model_validate(
        {"base": {"entry_point": "paced", **base}, "space": space, "trials": 2}
    )
    async with open_service(config) as service:
        with pytest.raises(InvalidInputError, match=words) as info:
            await service.start_sweep(request)
        assert info.value.field == field
        assert (await service.list_operations()).returned == 0
