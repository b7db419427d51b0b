"""training-mcp's light client: push a training loop's metrics to a training-mcp server.

    import training_mcp

    with training_mcp.init(url="http://127.0.0.1:8765", name="my loop", config={"lr": 1e-3}) as run:
        for epoch in range(1, 11):
            run.log(epoch, train_loss=..., val_loss=...)

A script the server starts can also save checkpoints (`run.save_checkpoint(epoch, state)`) and
ask where to go on from (`run.resume_from()`), so `resume_training` and `fork_training` work for
it (`training_mcp.checkpoints`).

It needs only httpx (`pip install ./client` from a checkout of training-mcp) and never imports
torch, so a notebook or any training script can use it. `training_mcp.points` is the metric
point every part of training-mcp shares.
"""

from typing import TYPE_CHECKING, Any

from training_mcp.history import HistoryError, HistoryRow, history, to_pandas
from training_mcp.points import MAX_BATCH_POINTS, METRIC_NAME_PATTERN, MetricPoint

if TYPE_CHECKING:
    from training_mcp.checkpoints import Checkpoint, CheckpointError, Checkpoints
    from training_mcp.reporter import (
        MemoryQueue,
        MetricsReporter,
        PointQueue,
        ReportError,
        ReporterStats,
        RetryPolicy,
    )
    from training_mcp.run import Run, current_run, finish, init, log, resume_from

# The reporter and the run import httpx (~70 ms), loaded on first use: the server imports this
# package for `training_mcp.points` alone, at every start.
_LAZY = {
    **dict.fromkeys(
        ["MemoryQueue", "MetricsReporter", "PointQueue", "ReportError", "ReporterStats"],
        "reporter",
    ),
    "RetryPolicy": "reporter",
    **dict.fromkeys(["Run", "current_run", "finish", "init", "log", "resume_from"], "run"),
    **dict.fromkeys(["Checkpoint", "CheckpointError", "Checkpoints"], "checkpoints"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'training_mcp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"training_mcp.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_BATCH_POINTS",
    "METRIC_NAME_PATTERN",
    "Checkpoint",
    "CheckpointError",
    "Checkpoints",
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
    "resume_from",
    "to_pandas",
]
