"""Storage of training operations and their metric points (SQLAlchemy async; SQLite or PostgreSQL).

The repository functions below are the only way the rest of training-mcp touches the database.
"""

from storage.database import DB_FILENAME, Database, connect, default_database_url, open_database
from storage.errors import (
    IllegalTransitionError,
    InvalidPointError,
    OperationFinishedError,
    OperationNotFoundError,
    StorageError,
)
from storage.history import MAX_PAGE_SIZE, ExportRow, HistoryPage, iter_history, read_page
from storage.metrics import (
    MIN_SAMPLE_POINTS,
    AppendResult,
    append_points,
    latest_values,
    operation_with_latest,
    read_metrics,
    validate_points,
)
from storage.models import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Backend,
    MetricPointIn,
    MetricsRead,
    NonFinite,
    Operation,
    OperationStatus,
    SeriesData,
    SeriesLatest,
)
from storage.operations import (
    create_operation,
    get_operation,
    list_operations,
    new_operation_id,
    record_heartbeat,
    set_progress,
    set_status,
)

__all__ = [
    "DB_FILENAME",
    "MAX_PAGE_SIZE",
    "MIN_SAMPLE_POINTS",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "AppendResult",
    "Backend",
    "Database",
    "ExportRow",
    "HistoryPage",
    "IllegalTransitionError",
    "InvalidPointError",
    "MetricPointIn",
    "MetricsRead",
    "NonFinite",
    "Operation",
    "OperationFinishedError",
    "OperationNotFoundError",
    "OperationStatus",
    "SeriesData",
    "SeriesLatest",
    "StorageError",
    "append_points",
    "connect",
    "create_operation",
    "default_database_url",
    "get_operation",
    "iter_history",
    "latest_values",
    "list_operations",
    "new_operation_id",
    "open_database",
    "operation_with_latest",
    "read_metrics",
    "read_page",
    "record_heartbeat",
    "set_progress",
    "set_status",
    "validate_points",
]
