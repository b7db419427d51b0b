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
    "check_runs_elsewhere",
    "epochs_total",
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


def check_runs_elsewhere(entry: EntryPoint) -> None:
    """`InvalidInputError` unless `entry` can run off this server (on a bridge, on Ray): a
    declared TensorBoard log dir is read from the server's own disk."""
    if entry.tensorboard_logdir is not None:
        raise InvalidInputError(
            f"backend: entry point {entry.name!r} declares a tensorboard_logdir, which the "
            "server reads from its own disk; run it with backend 'local'",
            field="backend",
        )


def epochs_total(values: Mapping[str, Any]) -> int | None:
    """A script run's epochs_total: its `epochs` parameter, where it declares a positive one."""
    epochs = values.get("epochs")
    return epochs if isinstance(epochs, int) and epochs > 0 else None
