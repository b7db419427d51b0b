"""Tools built from request models, for every tool the MCP door registers (server.py, apps.py,
steering.py, sweeps.py): a model's fields become the tool's keyword parameters with their ranges
and descriptions, said once in the model, and arguments are parsed back into it with errors that
name the field. Also what the tools share: their annotations and the operation id parameter."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from mcp_server.core.errors import ServiceError, from_validation_error

__all__ = [
    "CREATES",
    "READ_ONLY",
    "OperationId",
    "client_errors",
    "parameters",
    "parse",
    "signature",
]

M = TypeVar("M", bound=BaseModel)

# Every tool works on this server's runs only (closed world). One that reads, and one that starts
# something new (a run, a sweep, a trial) without changing what exists.
READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
CREATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
OperationId = Annotated[str, Field(description="The id start_training returned, e.g. op-k3f9x2ab")]


@contextmanager
def client_errors() -> Iterator[None]:
    """A service error becomes an isError result that names the field; nothing else leaks."""
    try:
        yield
    except ServiceError as exc:
        raise ToolError(exc.message) from exc


def parse(model: type[M], arguments: dict[str, Any]) -> M:
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolError(from_validation_error(exc).message) from exc


def parameters(
    model: type[BaseModel], fields: Sequence[str] | None = None
) -> list[inspect.Parameter]:
    """`model`'s fields (or those named) as keyword parameters, with ranges and descriptions."""
    params = []
    for name in fields if fields is not None else list(model.model_fields):
        info = model.model_fields[name]
        extra = Field(description=info.description, json_schema_extra=info.json_schema_extra)
        default = (
            inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True)
        )
        annotation = Annotated[info.annotation, *info.metadata, extra]  # type: ignore[name-defined]
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def signature(
    model: type[BaseModel],
    returns: Any,
    *,
    leading: Sequence[inspect.Parameter] = (),
    fields: Sequence[str] | None = None,
) -> inspect.Signature:
    return inspect.Signature([*leading, *parameters(model, fields)], return_annotation=returns)
