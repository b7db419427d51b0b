"""The service's exceptions: every client mistake becomes one of these, with a stable code.

Lower layers (storage, trainer) raise their own errors; `translate()` maps them here once, so the
MCP tools answer an `isError` result and the REST mirror a JSON error, never a traceback.
"""

from __future__ import annotations

from pydantic import ValidationError

from storage import (
    IllegalTransitionError,
    InvalidPointError,
    InvalidRunCursorError,
    OperationFinishedError,
    OperationNotFoundError,
    StorageError,
)
from trainer.errors import SpecError

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "ServiceError",
    "UnavailableError",
    "from_validation_error",
    "translate",
]


class ServiceError(Exception):
    """Base: `code` is stable for clients, `field` names the offending input when there is one."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInputError(ServiceError):
    code = "invalid_input"
    http_status = 422


class NotFoundError(ServiceError):
    code = "not_found"
    http_status = 404


class ForbiddenError(ServiceError):
    """The caller may not do this to this run (it is not the run's source)."""

    code = "forbidden"
    http_status = 403


class ConflictError(ServiceError):
    code = "conflict"
    http_status = 409


class UnavailableError(ServiceError):
    """Something the request needs is not there (no GPU bridge configured or reachable)."""

    code = "unavailable"
    http_status = 503


def from_validation_error(exc: ValidationError, prefix: str = "") -> InvalidInputError:
    """The first pydantic error as one message naming the field and what is allowed."""
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
    field = ".".join([prefix, *loc] if prefix else loc) or prefix or "arguments"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    extra = len(exc.errors()) - 1
    suffix = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    return InvalidInputError(f"{field}: {message}{suffix}", field=field)


def translate(exc: Exception) -> ServiceError:
    """Map a lower layer's error to the service's; unknown exceptions are not client mistakes."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, OperationNotFoundError):
        return NotFoundError(str(exc), field="operation_id")
    if isinstance(exc, OperationFinishedError):
        return ConflictError(str(exc), field="operation_id")
    if isinstance(exc, IllegalTransitionError):
        return ConflictError(str(exc), field="status")
    if isinstance(exc, InvalidRunCursorError):
        return InvalidInputError(str(exc), field="cursor")
    if isinstance(exc, InvalidPointError):
        return InvalidInputError(str(exc), field=f"points[{exc.index}].{exc.field}")
    if isinstance(exc, SpecError):
        return InvalidInputError(str(exc), field=exc.field)
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, StorageError):
        return ServiceError(str(exc))
    raise exc
