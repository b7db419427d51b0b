"""The analysis' forecast looks ahead to the run's own epochs_total, through the cache."""

from __future__ import annotations

import math

import pytest

from mcp_server.core.history import load_history
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import TrainingService
from trainer.analysis import AnalysisParams, analyze_loss

pytestmark = pytest.mark.anyio


async def test_the_forecast_horizon_is_the_runs_epochs_total_unless_the_caller_sets_one(
    service: TrainingService,
) -> None:
    started = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external", "epochs": 40})
    )
    op = started.operation_id
    for epoch in range(1, 21):
        loss = 0.3 + math.exp(-epoch / 4) + 0.002 * math.sin(3 * epoch)
        points = [
            {"name": "train_loss", "step": epoch, "value": loss - 0.1},
            {"name": "val_loss", "step": epoch, "value": loss},
        ]
        await service.push_metrics(op, points)
        analysis = await service.analyze(op)

    assert analysis.params.epochs_total == 40
    assert analysis.forecast is not None and analysis.forecast.horizon == 40
    assert analysis.forecast.epochs_left == 20
    history = await load_history(service._db, op)
    assert analysis == analyze_loss(history, AnalysisParams(epochs_total=40))
    longer = await service.analyze(op, AnalysisParams(epochs_total=100))
    assert longer.forecast is not None and longer.forecast.horizon == 100
