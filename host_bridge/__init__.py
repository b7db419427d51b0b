"""The GPU host side of training-mcp, and the metrics-pushing client any training loop can use."""

from host_bridge.reporter import (
    MAX_BATCH_POINTS,
    MemoryQueue,
    MetricPoint,
    MetricsReporter,
    PointQueue,
    ReportError,
    ReporterStats,
    RetryPolicy,
)

__all__ = [
    "MAX_BATCH_POINTS",
    "MemoryQueue",
    "MetricPoint",
    "MetricsReporter",
    "PointQueue",
    "ReportError",
    "ReporterStats",
    "RetryPolicy",
]
