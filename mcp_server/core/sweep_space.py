"""A sweep's request and its search space, validated where they arrive (torch- and optuna-free).

A space maps a flat `start_training` argument to a range (`{"low", "high", "log", "int",
"step"}`) or a list of `choices`. Each bound and choice is checked against the base run's spec,
so an error names the parameter and what the spec allows. A sweep over an entry point
(`base={"entry_point": ..., "params": {...}}`) varies only the parameters its declaration names,
each bound and choice checked against the declared type, range and choices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_server.core.entry_points import EntryPoint, ParameterError
from mcp_server.core.errors import InvalidInputError, from_validation_error
from mcp_server.core.models import StartTrainingArgs

__all__ = [
    "MAX_PARALLEL",
    "MAX_TRIALS",
    "Param",
    "SweepRequest",
    "check_space",
    "is_entry_point",
    "trial_args",
    "trial_epochs",
]

MAX_TRIALS = 1000
MAX_PARALLEL = 16
# Arguments a sweep cannot vary: they say which run it is, not how it trains.
_NOT_SWEPT = frozenset({"name", "tags", "backend", "spec", "entry_point", "params"})
_ENTRY_BASE = frozenset({"entry_point", "params", "name", "tags"})


class Param(BaseModel):
    """One swept parameter: a range (`low`/`high`, `log`, `int`, `step`) or `choices`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    log: bool = False
    int: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[Any] | None = None


class SweepRequest(BaseModel):
    """A start_sweep call."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(
        default_factory=dict,
        description="The start_training arguments every trial shares ({} = the demo run), or "
        "entry_point and params",
    )
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=32,
        description='start_training argument -> {"low", "high", "log", "int", "step"} or '
        '{"choices": [...]}, e.g. {"learning_rate": {"low": 1e-4, "high": 0.1, "log": true}}',
    )
    trials: int = Field(default=12, ge=1, le=MAX_TRIALS, description="Trials to run in all")
    parallel: int = Field(
        default=2,
        ge=1,
        le=MAX_PARALLEL,
        description="Trials training at once (still queued "
        "behind the server's --max-concurrent-runs)",
    )
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["hyperband", "median", "analysis", "none"] = Field(
        default="hyperband",
        description="Optuna's Hyperband or median pruner; 'analysis' stops a trial when "
        "analyze_loss recommends stopping; 'none' trains every trial to its end",
    )
    budget: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Total epochs the sweep may train; no new trial starts once they are spent",
    )
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="The sampler's seed")
    name: str | None = Field(default=None, max_length=200)


def is_entry_point(base: Mapping[str, Any]) -> bool:
    """Whether a sweep's trials are script runs of a declared entry point."""
    return "entry_point" in base or "params" in base


def trial_args(base: dict[str, Any], params: dict[str, Any], **extra: Any) -> StartTrainingArgs:
    """A trial's start_training arguments: the base with the trial's parameters (an entry
    point's go into its `params`)."""
    if is_entry_point(base):
        merged = {**(base.get("params") or {}), **params}
        return StartTrainingArgs.model_validate({**base, "params": merged, **extra})
    return StartTrainingArgs.model_validate({**base, **params, **extra})


def trial_epochs(request: SweepRequest, entry: EntryPoint | None) -> int | None:
    """The most epochs a trial trains (Hyperband's resource), where the request says."""
    space = request.space.get("epochs")
    if space is not None and space.high is not None:
        return int(space.high)
    if entry is None:
        return StartTrainingArgs.model_validate(request.base).epochs
    defaults = {p.name: p.default for p in entry.parameters}
    epochs = {**defaults, **(request.base.get("params") or {})}.get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def check_space(
    request: SweepRequest,
    build: Callable[[StartTrainingArgs], object],
    entry_points: Mapping[str, EntryPoint] | None = None,
    data_roots: Sequence[Path] = (),
) -> EntryPoint | None:
    """Refuse a space the base run cannot take, naming the parameter and the problem. `build`
    turns arguments into a run's spec (raising `InvalidInputError`), as start_training does;
    `entry_points` are the declared scripts. Returns the entry point the trials run, if any."""
    if is_entry_point(request.base):
        return _check_entry_space(request, entry_points or {}, data_roots)
    try:
        base = StartTrainingArgs.model_validate(request.base)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="base") from exc
    if base.backend == "external":
        raise InvalidInputError("base.backend: a sweep trains its trials itself", field="base")
    try:
        build(base)
    except InvalidInputError as exc:
        raise InvalidInputError(f"base.{exc.message}", field=f"base.{exc.field}") from exc
    fields = StartTrainingArgs.model_fields
    for name, param in request.space.items():
        where = f"space.{name}"
        if name not in fields or name in _NOT_SWEPT:
            allowed = ", ".join(n for n in fields if n not in _NOT_SWEPT)
            raise InvalidInputError(f"{where}: not a parameter a sweep can vary; use one of "
                                    f"{allowed}", field=where)  # fmt: skip
        values = _values(where, param, request.sampler)
        for value in values:
            try:
                build(trial_args(request.base, {name: value}))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"{where}: {value!r} is not allowed ({exc.message})", field=where
                ) from exc
            except ValidationError as exc:
                error = from_validation_error(exc, prefix=where)
                if exc.errors()[0]["type"].startswith("int_"):
                    error = InvalidInputError(
                        f'{where}: an integer argument; add "int": true', field=where
                    )
                raise error from exc
    return None


def _check_entry_space(
    request: SweepRequest, declared: Mapping[str, EntryPoint], data_roots: Sequence[Path]
) -> EntryPoint:
    base = request.base
    extra = sorted(set(base) - _ENTRY_BASE)
    if extra:
        raise InvalidInputError(
            f"base.{extra[0]}: a sweep over an entry point takes only entry_point, params, name "
            "and tags; vary the script's declared parameters in space",
            field=f"base.{extra[0]}",
        )
    name = base.get("entry_point")
    entry = declared.get(name) if isinstance(name, str) else None
    if entry is None:
        allowed = ", ".join(sorted(declared)) or "none (start the server with --entry-points)"
        raise InvalidInputError(
            f"base.entry_point: {name!r} is not declared; declared: {allowed}",
            field="base.entry_point",
        )
    params = base.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInputError("base.params: must be an object", field="base.params")
    parameters = {p.name: p for p in entry.parameters}
    sample: dict[str, Any] = {}
    for pname, param in request.space.items():
        where = f"space.{pname}"
        p = parameters.get(pname)
        if p is None:
            raise InvalidInputError(
                f"{where}: not a declared parameter of entry point {entry.name!r}; declared: "
                f"{', '.join(parameters) or 'none'}",
                field=where,
            )
        values = _values(where, param, request.sampler)
        if param.choices is None and p.type not in ("int", "float"):
            raise InvalidInputError(
                f"{where}: a {p.type} parameter takes choices, not a range", field=where
            )
        if param.choices is None and p.type == "int" and not param.int:
            raise InvalidInputError(f'{where}: an integer parameter; add "int": true', field=where)
        for value in values:
            try:
                p.check(value, data_roots, Path(entry.cwd))
            except ParameterError as exc:
                raise InvalidInputError(
                    f"{where}: {value!r} is not allowed; {pname} must be {p.allowed()}",
                    field=where,
                ) from exc
        sample[pname] = values[0]
    try:  # the base's own values, and every required parameter given somewhere
        entry.resolve({**params, **sample}, "sweep", data_roots)
    except ParameterError as exc:
        raise InvalidInputError(f"base.{exc.message}", field=f"base.{exc.field}") from exc
    return entry


def _values(where: str, param: Param, sampler: str) -> list[Any]:
    """The values to check a parameter with: its bounds or every choice."""
    if param.choices is not None:
        if param.low is not None or param.high is not None:
            raise InvalidInputError(f"{where}: give choices or low/high, not both", field=where)
        if not param.choices:
            raise InvalidInputError(f"{where}.choices: give at least one choice", field=where)
        return list(param.choices)
    if param.low is None or param.high is None:
        raise InvalidInputError(f"{where}: give low and high, or choices", field=where)
    if sampler == "grid":
        raise InvalidInputError(
            f"{where}: the grid sampler needs choices; give a list of values", field=where
        )
    if param.low >= param.high:
        raise InvalidInputError(
            f"{where}: low ({param.low:g}) must be below high ({param.high:g})", field=where
        )
    if param.log and param.low <= 0:
        raise InvalidInputError(
            f"{where}.low: log needs a positive range, got low {param.low:g}", field=where
        )
    if param.log and param.step is not None:
        raise InvalidInputError(f"{where}: step cannot be used with log", field=where)
    if param.int:
        if param.low != int(param.low) or param.high != int(param.high):
            raise InvalidInputError(
                f"{where}: int needs whole bounds, got {param.low:g}..{param.high:g}", field=where
            )
        return [int(param.low), int(param.high)]
    # a point between the bounds too: an integer argument swept without "int" fails here
    return [param.low, param.high, param.low + (param.high - param.low) * 0.37]
