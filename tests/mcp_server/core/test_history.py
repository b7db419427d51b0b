"""The analysis cache: pushed epochs update it incrementally, an epoch pushed in parts merges,
and whatever path the points took, the answer equals a fresh analysis of what storage holds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mcp_server.core.history import AnalysisCache, load_history
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import TrainingService
from storage import Backend, append_points, create_operation, open_database
from trainer.analysis import AnalysisParams, analyze_loss
from training_mcp.points import MetricPoint

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


async def test_an_epoch_stored_while_the_cache_is_being_built_is_not_lost(tmp_path: Path) -> None:
    """A restarted server's first read builds the cache; an epoch pushed while that build awaits
    (the run's budget, the history) must end up in it, whichever await it lands in."""
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    try:
        op = (await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})).operation_id

        async def store(epoch: int) -> None:
            train, val = _curve(epoch)
            points = [
                MetricPoint("train_loss", epoch, train, epoch),
                MetricPoint("val_loss", epoch, val, epoch),
            ]
            await append_points(db, op, points)
            cache.merge(op, {epoch: {"train_loss": train, "val_loss": val}})

        class PushedMeanwhile(AnalysisCache):
            async def defaults(self, operation_id: str) -> AnalysisParams:
                params = await super().defaults(operation_id)
                if not pushed:  # an epoch arrives during the build's first await
                    pushed.append(13)
                    await store(13)
                return params

        pushed: list[int] = []
        cache = PushedMeanwhile(db)
        for epoch in range(1, 13):
            await store(epoch)  # no cache yet: merges are dropped, storage has them
        analysis = await cache.current(op)
        assert pushed == [13]
        assert analysis.epochs_analyzed == 13 and analysis.last_epoch == 13
        await store(14)  # and the cache built then goes on updating
        assert (await cache.current(op)).model_dump() == analyze_loss(
            await load_history(db, op)
        ).model_dump()
    finally:
        await db.close()
