"""The analysis cache: pushed epochs update it incrementally, an epoch pushed in parts merges,
and whatever path the points took, the answer equals a fresh analysis of what storage holds."""

from __future__ import annotations

import math

import pytest

from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import TrainingService
from trainer.analysis import analyze_loss

pytestmark = pytest.mark.anyio


def _curve(epoch: int) -> tuple[float, float]:
    train = 1.0 / epoch
    val = 0.8 + 0.3 * (epoch - 12) ** 2 / 144 + 0.01 * math.sin(epoch)
    return train, val


TOKENS: dict[str, str | None] = {}  # operation id -> its push credential


async def _external(service: TrainingService) -> str:
    started = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external"})
    )
    TOKENS[started.operation_id] = started.push_token
    return started.operation_id


async def _fresh(service: TrainingService, operation_id: str) -> dict[str, object]:
    from mcp_server.core.history import load_history

    history = await load_history(service._db, operation_id)  # the truth: storage
    return analyze_loss(history).model_dump()


async def test_epochs_pushed_in_parts_give_the_analysis_of_the_whole_epochs(
    service: TrainingService,
) -> None:
    op = await _external(service)
    for epoch in range(1, 31):
        train, val = _curve(epoch)
        await service.push_metrics(
            op,
            push_token=TOKENS[op],
            points=[{"name": "train_loss", "step": epoch, "value": train}],
        )
        partial = await service.analyze(op)
        assert partial.epochs_analyzed == epoch
        await service.push_metrics(
            op, push_token=TOKENS[op], points=[{"name": "val_loss", "step": epoch, "value": val}]
        )
        merged = await service.analyze(op)
        assert merged.model_dump() == await _fresh(service, op)
    assert merged.best_epoch == min(range(1, 31), key=lambda e: _curve(e)[1])
    assert merged.verdict == "overfitting"


async def test_late_parts_duplicates_and_out_of_order_epochs_still_match_storage(
    service: TrainingService,
) -> None:
    op = await _external(service)
    await service.analyze(op)  # the cache exists from the start
    for epoch in (1, 2, 3, 5, 4, 6):
        train, val = _curve(epoch)
        await service.push_metrics(
            op,
            push_token=TOKENS[op],
            points=[{"name": "train_loss", "step": epoch, "value": train}],
        )
        await service.analyze(op)
    # a val_loss for every epoch, late; one batch re-sends a point already stored
    for epoch in range(1, 7):
        _, val = _curve(epoch)
        await service.push_metrics(
            op,
            push_token=TOKENS[op],
            points=[
                {"name": "val_loss", "step": epoch, "value": val},
                {"name": "train_loss", "step": 1, "value": 99.0},  # duplicate: storage keeps 1.0
            ],
        )
        assert (await service.analyze(op)).model_dump() == await _fresh(service, op)
