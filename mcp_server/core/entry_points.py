"""Entry points, as the server uses them: the declarations live in `host_bridge.entry_points`
(a bridge loads the same file); here a parameter the declaration refuses becomes the service's
`InvalidInputError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from host_bridge.entry_points import (
    EntryPoint,
    EntryPointFileError,
    EntryPointList,
    Parameter,
    ParameterError,
    load_entry_points,
)
from mcp_server.core.errors import InvalidInputError

__all__ = [
    "EntryPoint",
    "EntryPointFileError",
    "EntryPointList",
    "Parameter",
    "ParameterError",
    "load_entry_points",
    "resolve",
]


def resolve(
    entry: EntryPoint,
    params: Mapping[str, Any] | None,
    operation_id: str,
    data_roots: Sequence[Path],
) -> tuple[list[str], dict[str, Any]]:
    """`entry.resolve`, its refusal as `InvalidInputError` naming the parameter."""
    try:
        return entry.resolve(params, operation_id, data_roots)
    except ParameterError as exc:
        raise InvalidInputError(exc.message, field=exc.field) from exc
