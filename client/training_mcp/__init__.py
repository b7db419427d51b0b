"""training-mcp's light client: push a training loop's metrics to a training-mcp server.

    import training_mcp

    with training_mcp.init(url="http://127.0.0.1:8765", name="my loop", config={"lr": 1e-3}) as run:
        for epoch in range(1, 11):
            run.log(epoch, train_loss=..., val_loss=...)

It needs only httpx (`pip install ./client` from a checkout of training-mcp) and never imports
torch, so a notebook or any training script can use it. `training_mcp.points` is the metric
point every part of training-mcp shares.
"""

from training_mcp.history import HistoryError, HistoryRow, history, to_pandas
from training_mcp.points import MAX_BATCH_POINTS, METRIC_NAME_PATTERN, MetricPoint
from training_mcp.reporter import (
    MemoryQueue,
    MetricsReporter,
    PointQueue,
    ReportError,
    ReporterStats,
    RetryPolicy,
)
from training_mcp.run import Run, current_run, finish, init, log

__all__ = [
    "MAX_BATCH_POINTS",
    "METRIC_NAME_PATTERN",
    "HistoryError",
    "HistoryRow",
    "MemoryQueue",
    "MetricPoint",
    "MetricsReporter",
    "PointQueue",
    "ReportError",
    "ReporterStats",
    "RetryPolicy",
    "Run",
    "current_run",
    "finish",
    "history",
    "init",
    "log",
    "to_pandas",
]
