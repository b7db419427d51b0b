"""A local run's step losses reach storage whole: handed to the event loop an epoch at a time,
and those of an epoch the run left part way (a failure) after it returned."""

from __future__ import annotations

import json
import re

import pytest

from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.queries import ExportQuery, WaitQuery
from mcp_server.core.service import TrainingService

pytestmark = pytest.mark.anyio

STEPS = ExportQuery(metrics=["step/train_loss"])


async def _run(service: TrainingService, **args: object) -> tuple[str, list[int]]:
    started = await service.start_training(StartTrainingArgs.model_validate(args))
    op = started.operation_id
    await service.wait_for_operation(op, WaitQuery(until="end", timeout_s=55))
    stream = await service.export_metrics(op, STEPS)
    lines = b"".join([part async for part in stream]).splitlines()
    return op, [json.loads(line)["step"] for line in lines]


async def test_every_logged_step_of_a_run_is_stored_once(service: TrainingService) -> None:
    op, steps = await _run(
        service, dataset="blobs", epochs=3, hidden_sizes=[16], batch_size=16, log_every_n_steps=1
    )
    assert (await service.get_operation(op)).status == "completed"
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 3 == 0 and len(steps) > 30


async def test_the_steps_of_the_epoch_a_run_failed_in_are_stored_too(
    service: TrainingService,
) -> None:
    op, steps = await _run(
        service,
        dataset="blobs",
        epochs=5,
        hidden_sizes=[16],
        batch_size=16,
        optimizer="sgd",
        learning_rate=100.0,
        log_every_n_steps=1,
    )
    info = await service.get_operation(op)
    found = re.search(r"at epoch (\d+), step (\d+)", info.error or "")
    assert info.status == "failed" and found is not None, info.error
    epoch, failed_at = int(found[1]), int(found[2])
    assert epoch == 1 and failed_at > 2, info.error  # no epoch record hands these over
    assert steps == list(range(1, failed_at))  # every step before the non-finite one
