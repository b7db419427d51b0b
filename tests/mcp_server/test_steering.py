"""Fork and resume through the service and the MCP tools, with real trainings on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.config import ServerConfig
from mcp_server.core.errors import ConflictError, InvalidInputError
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.queries import MetricsQuery, WaitQuery
from mcp_server.core.service import TrainingService, open_service
from mcp_server.core.steering import ForkRequest
from mcp_server.server import build_mcp_server
from storage import OperationStatus
from tests.mcp_server.conftest import TINY
from trainer.checkpoint_budget import CheckpointBudget
from trainer.retention import INDEX

pytestmark = pytest.mark.anyio

# The demo set with a smaller demo model: its val_loss turns up after a few epochs.
DEMO = {
    "dataset": "noisy_spirals",
    "hidden_sizes": [128, 128],
    "learning_rate": 0.003,
    "epochs": 14,
    "spec": {"torch_threads": 1},
}


def _fork(from_epoch: str, **changes: Any) -> ForkRequest:
    return ForkRequest.model_validate({"from_epoch": from_epoch, "changes": changes})


async def _finish(service: TrainingService, operation_id: str) -> None:
    with anyio.fail_after(120):
        while not (await service.get_operation(operation_id)).finished:
            await service.wait_for_operation(operation_id, WaitQuery(until="end", timeout_s=30))


async def _series(service: TrainingService, operation_id: str, name: str) -> dict[int, float]:
    read = await service.get_metrics(operation_id, MetricsQuery(metrics=[name], max_points=1000))
    return dict(zip(read.series[0].steps, read.series[0].floats(), strict=True))


async def test_a_fork_at_the_best_epoch_with_a_lower_rate_continues_and_beats_the_parents_end(
    client: Client, service: TrainingService
) -> None:
    started = await service.start_training(StartTrainingArgs.model_validate(DEMO))
    parent = started.operation_id
    await _finish(service, parent)
    parent_val = await _series(service, parent, "val_loss")
    best = min(parent_val, key=parent_val.__getitem__)
    assert best < max(parent_val)  # the demo overfits: its last epoch is worse than its best

    result = await client.call_tool(
        "fork_training",
        {
            "operation_id": parent,
            "from_epoch": "best",
            "changes": {"learning_rate": 3e-4, "epochs": 3},
        },
    )
    assert not result.is_error, result.content
    forked = result.structured_content
    assert forked is not None
    child = forked["operation_id"]
    assert forked["lineage"] == {
        "parent_id": parent,
        "from_epoch": best,
        "changes": {"learning_rate": 3e-4, "epochs": 3},
    }
    await _finish(service, child)

    op = await service.get_operation(child)
    assert op.status is OperationStatus.COMPLETED and op.epochs_total == best + 3
    assert op.lineage is not None and op.lineage.parent_id == parent
    child_val = await _series(service, child, "val_loss")
    assert sorted(child_val) == list(range(1, best + 4))  # the parent's start, then its own
    assert all(child_val[e] == parent_val[e] for e in range(1, best + 1))
    rates = await _series(service, child, "learning_rate")
    assert rates[best + 1] == pytest.approx(3e-4)
    assert child_val[best + 3] < parent_val[max(parent_val)]


async def test_a_fork_from_an_epoch_without_a_checkpoint_is_refused_naming_those_that_exist(
    tmp_path: Path,
) -> None:
    # a per-run budget of 0 keeps only the best and the last epoch's checkpoints
    config = ServerConfig(
        data_dir=tmp_path / "data",
        data_roots=(tmp_path,),
        checkpoints=CheckpointBudget(per_run=0, total=None),
    )
    async with open_service(config) as service, Client(build_mcp_server(service)) as client:
        started = await service.start_training(
            StartTrainingArgs.model_validate({**TINY, "epochs": 4, "learning_rate": 0.1})
        )
        await _finish(service, started.operation_id)
        index = json.loads((config.artifacts_dir / started.operation_id / INDEX).read_text())
        missing = next(e for e in range(1, 5) if e not in index["epochs"])
        result = await client.call_tool(
            "fork_training", {"operation_id": started.operation_id, "from_epoch": missing}
        )
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert f"no checkpoint for epoch {missing}; checkpoints exist for epochs " in text
        assert "last)" in text and "best" in text

        with pytest.raises(InvalidInputError, match="cannot change in a fork") as shape:
            await service.fork_training(started.operation_id, _fork("last", hidden_sizes=[64]))
        assert shape.value.field == "changes.hidden_sizes"
        with pytest.raises(InvalidInputError, match=r"changes\.learning_rate") as bad:
            await service.fork_training(started.operation_id, _fork("last", learning_rate=-1))
        assert bad.value.field == "changes.learning_rate"
        assert len((await service.list_operations()).operations) == 1  # nothing was created


async def test_the_analysis_names_the_fork_call_for_a_lower_rate_with_its_value(
    service: TrainingService,
) -> None:
    started = await service.start_training(
        StartTrainingArgs.model_validate({**TINY, "epochs": 4, "learning_rate": 0.03})
    )
    await _finish(service, started.operation_id)
    analysis = await service.analyze(started.operation_id)
    plateaued = analysis.model_copy(update={"recommendation": "reduce_learning_rate"})
    named = await service._steering.with_next_call(started.operation_id, plateaued)
    assert named.next_call == {
        "tool": "fork_training",
        "arguments": {
            "operation_id": started.operation_id,
            "from_epoch": "best",
            "changes": {"epochs": 5, "learning_rate": 0.01},
        },
    }
    regularize = analysis.model_copy(update={"recommendation": "add_regularization"})
    named = await service._steering.with_next_call(started.operation_id, regularize)
    assert named.next_call is not None
    assert named.next_call["arguments"]["changes"] == {
        "epochs": 5,
        "weight_decay": 0.0001,
        "dropout": 0.2,
    }


async def test_a_run_the_server_stopped_resumes_in_the_same_operation_with_each_epoch_once(
    tmp_path: Path,
) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,))
    spec: dict[str, Any] = {**TINY, "epochs": 40, "batch_size": 8}
    async with open_service(config) as service:
        started = await service.start_training(StartTrainingArgs.model_validate(spec))
        operation_id = started.operation_id
        await service.wait_for_operation(operation_id, WaitQuery(until="epochs", epochs=2))
    # leaving the service stops the run: interrupted, its checkpoints kept
    async with open_service(config) as service:
        op = await service.get_operation(operation_id)
        assert op.status is OperationStatus.INTERRUPTED and op.epochs_done >= 2
        kept = await _series(service, operation_id, "train_loss")
        resumed = await service.resume_training(operation_id)
        assert resumed.operation_id == operation_id
        await _finish(service, operation_id)
        op = await service.get_operation(operation_id)
        assert op.status is OperationStatus.COMPLETED and op.error is None
        losses = await _series(service, operation_id, "train_loss")
        assert sorted(losses) == list(range(1, 41))
        assert all(losses[e] == v for e, v in kept.items())  # what was stored stays as it was
        with pytest.raises(ConflictError, match="completed"):
            await service.resume_training(operation_id)
    index = tmp_path / "data" / "artifacts" / operation_id / "checkpoints.json"
    assert json.loads(index.read_text())["last"] == 40
