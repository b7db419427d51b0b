"""Storage exceptions. The server translates each into one clear client error."""

from __future__ import annotations

__all__ = [
    "IllegalTransitionError",
    "InvalidPointError",
    "OperationFinishedError",
    "OperationNotFoundError",
    "StorageError",
]


class StorageError(Exception):
    """Base class of everything storage raises on purpose."""


class OperationNotFoundError(StorageError):
    def __init__(self, operation_id: str) -> None:
        super().__init__(f"operation_id: no operation {operation_id!r}")
        self.operation_id = operation_id


class IllegalTransitionError(StorageError):
    def __init__(self, operation_id: str, current: str, requested: str, allowed: tuple[str, ...]):
        options = ", ".join(allowed) if allowed else "none (it has finished)"
        super().__init__(
            f"status: operation {operation_id!r} is {current!r} and cannot become "
            f"{requested!r}; allowed next statuses: {options}"
        )
        self.operation_id = operation_id
        self.current = current
        self.requested = requested


class OperationFinishedError(StorageError):
    """Metrics were pushed for a run that has already finished."""

    def __init__(self, operation_id: str, status: str) -> None:
        super().__init__(
            f"operation_id: operation {operation_id!r} is {status!r}; it takes no more metrics"
        )
        self.operation_id = operation_id
        self.status = status


class InvalidPointError(StorageError):
    """One point of a batch is invalid; nothing of the batch was stored."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"points[{index}].{field}: {message}")
        self.index = index
        self.field = field
        self.message = message
