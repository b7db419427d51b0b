"""Entry points: the training scripts an operator declares in a TOML file, and nothing else.

    [entry_points.finetune]
    command = ["python", "train.py", "--lr", "{learning_rate}", "--epochs", "{epochs}"]
    cwd = "~/projects/mymodel"            # optional; default the file's folder
    description = "Fine-tune my model"    # shown to the agent
    stop_grace_s = 60                     # optional: time per stop signal (default --script-grace)
    [entry_points.finetune.parameters]
    learning_rate = { type = "float", default = 3e-4, min = 1e-6, max = 1.0, help = "peak LR" }
    epochs = { type = "int", default = 10, min = 1, max = 1000 }

The agent picks an entry point and gives parameter values; they are checked against the
declaration (type, range, choices; a path must lie under the server's data roots) and substituted
as whole argv elements, never through a shell. A file with a bad declaration is refused when it is
loaded, naming the file, the entry and the field. Pure: reading the file is the only effect.
Here, not in the server, because a bridge loads the same file (`training-mcp bridge
--entry-points`) and checks what a server asks it to run against its own declarations.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "MAX_GRACE_S",
    "EntryPoint",
    "EntryPointFileError",
    "EntryPointList",
    "Parameter",
    "ParameterError",
    "load_entry_points",
]

ParamType = Literal["int", "float", "str", "bool", "path"]
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BUILT_IN = {"operation_id"}  # placeholders the server fills itself
_ENTRY_KEYS = {"command", "cwd", "description", "tensorboard_logdir", "parameters", "stop_grace_s"}
MAX_GRACE_S = 3600.0
_PARAM_KEYS = {"type", "default", "min", "max", "choices", "help"}


class EntryPointFileError(Exception):
    """The entry points file is unusable: the message names the file, the entry and the field."""


class ParameterError(ValueError):
    """A parameter value an entry point does not allow: `field` names it (`params.X`)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Parameter(BaseModel):
    """One declared parameter: its type, default (absent: required), bounds and choices."""

    name: str
    type: ParamType
    default: Any = None
    required: bool = Field(description="True when there is no default")
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    help: str | None = None

    def allowed(self) -> str:
        """What values are allowed, in words, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        bound = ""
        if self.min is not None and self.max is not None:
            bound = f" between {self.min:g} and {self.max:g}"
        elif self.min is not None:
            bound = f" >= {self.min:g}"
        elif self.max is not None:
            bound = f" <= {self.max:g}"
        kind = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "path": "a path under the server's data roots",
        }[self.type]
        return kind + bound

    def check(self, value: Any, data_roots: Sequence[Path], cwd: Path) -> str:
        """`value` as the argv element it becomes; `ParameterError` naming the parameter."""
        field = f"params.{self.name}"
        wrong = ParameterError(f"{field}: must be {self.allowed()}, got {value!r}", field=field)
        if self.type == "bool":
            if not isinstance(value, bool):
                raise wrong
            return "true" if value else "false"
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise wrong
            if self.type == "int" and not (isinstance(value, int) or float(value).is_integer()):
                raise wrong
            if not math.isfinite(value):
                raise wrong
            if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max
            ):
                raise wrong
            if self.choices is not None and value not in self.choices:
                raise wrong
            return str(int(value)) if self.type == "int" else repr(float(value))
        if not isinstance(value, str) or "\x00" in value or len(value) > 4096:
            raise wrong
        if self.choices is not None and value not in self.choices:
            raise wrong
        if self.type == "path":
            resolved = (cwd / Path(value).expanduser()).resolve()
            if not any(resolved.is_relative_to(root.resolve()) for root in data_roots):
                raise wrong
            return str(resolved)
        return value


class EntryPoint(BaseModel):
    """A declared command. `argv()` fills in checked parameter values."""

    name: str
    description: str
    command: list[str]
    cwd: str
    tensorboard_logdir: str | None = None
    parameters: list[Parameter]
    # The operator's, for stopping; not the agent's to read (kept out of list_entry_points).
    stop_grace_s: SkipJsonSchema[float | None] = Field(None, exclude=True)

    def grace_s(self, default: float) -> float:
        """Seconds between stop signals (SIGINT, SIGTERM, SIGKILL) for this entry point."""
        return default if self.stop_grace_s is None else self.stop_grace_s

    def resolve(
        self, params: Mapping[str, Any] | None, operation_id: str, data_roots: Sequence[Path]
    ) -> tuple[list[str], dict[str, Any]]:
        """(argv, the values used, defaults included). Unknown, missing or out-of-range
        parameters raise `ParameterError` naming the parameter and what is allowed."""
        given = dict(params or {})
        declared = {p.name: p for p in self.parameters}
        unknown = sorted(set(given) - declared.keys())
        if unknown:
            allowed = ", ".join(declared) or "none"
            raise ParameterError(
                f"params.{unknown[0]}: unknown parameter of entry point {self.name!r}; "
                f"allowed: {allowed}",
                field=f"params.{unknown[0]}",
            )
        values: dict[str, Any] = {}
        texts: dict[str, str] = {"operation_id": operation_id}
        for p in self.parameters:
            if p.name in given:
                value = given[p.name]
            elif not p.required:
                value = p.default
            else:
                raise ParameterError(
                    f"params.{p.name}: required by entry point {self.name!r} ({p.allowed()})",
                    field=f"params.{p.name}",
                )
            texts[p.name] = p.check(value, data_roots, Path(self.cwd))
            values[p.name] = value
        argv = [_PLACEHOLDER.sub(lambda m: texts[m.group(1)], part) for part in self.command]
        return argv, values

    def logdir(self, operation_id: str) -> Path | None:
        """The TensorBoard log dir for this run, if one is declared."""
        if self.tensorboard_logdir is None:
            return None
        path = Path(self.tensorboard_logdir.replace("{operation_id}", operation_id))
        return (Path(self.cwd) / path.expanduser()).resolve()


class EntryPointList(BaseModel):
    """What the agent may start with `start_training(entry_point=..., params=...)`."""

    entry_points: list[EntryPoint]
    file: str | None = Field(description="The declarations' file (None: none declared)")


def load_entry_points(path: Path) -> dict[str, EntryPoint]:
    """Read and check every declaration of `path`; `EntryPointFileError` on the first problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EntryPointFileError(f"{path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise EntryPointFileError(f"{path}: not valid TOML ({exc})") from exc
    extra = sorted(set(data) - {"entry_points"})
    if extra:
        raise EntryPointFileError(f"{path}: unknown table {extra[0]!r}; expected [entry_points.X]")
    table = data.get("entry_points", {})
    if not isinstance(table, dict):
        raise EntryPointFileError(f"{path}: entry_points must be a table")
    return {name: _entry(path, name, raw) for name, raw in table.items()}


def _entry(path: Path, name: str, raw: Any) -> EntryPoint:
    def bad(field: str, why: str) -> EntryPointFileError:
        return EntryPointFileError(f"{path}: entry point {name!r}, {field}: {why}")

    if not _NAME.match(name):
        raise bad("name", "letters, digits, _ and -, starting with a letter (<= 64)")
    if not isinstance(raw, dict):
        raise bad("entry", "must be a table")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise bad(unknown[0], f"unknown field; allowed: {', '.join(sorted(_ENTRY_KEYS))}")
    command = raw.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(c, str) and c for c in command)
    ):
        raise bad("command", "must be a non-empty list of strings (argv; no shell)")
    cwd_raw = raw.get("cwd", ".")
    if not isinstance(cwd_raw, str):
        raise bad("cwd", "must be a string")
    cwd = (path.parent / Path(cwd_raw).expanduser()).resolve()
    if not cwd.is_dir():
        raise bad("cwd", f"{cwd} is not a folder")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise bad("description", "must be a string")
    logdir = raw.get("tensorboard_logdir")
    if logdir is not None and not isinstance(logdir, str):
        raise bad("tensorboard_logdir", "must be a string")
    grace = raw.get("stop_grace_s")
    if grace is not None and (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not 0 < grace <= MAX_GRACE_S
    ):
        raise bad(
            "stop_grace_s", f"must be a number of seconds, more than 0 and at most {MAX_GRACE_S:g}"
        )
    params_raw = raw.get("parameters", {})
    if not isinstance(params_raw, dict):
        raise bad("parameters", "must be a table")
    parameters = [_parameter(bad, pname, spec) for pname, spec in params_raw.items()]
    known = {p.name for p in parameters} | _BUILT_IN
    for part in command:
        for used in _PLACEHOLDER.findall(part):
            if used not in known:
                raise bad("command", f"{{{used}}} is not a declared parameter")
    return EntryPoint(
        name=name,
        description=description,
        command=command,
        cwd=str(cwd),
        tensorboard_logdir=logdir,
        parameters=parameters,
        stop_grace_s=None if grace is None else float(grace),
    )


def _parameter(bad: Any, name: str, spec: Any) -> Parameter:
    field = f"parameters.{name}"
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name) or name in _BUILT_IN:
        raise bad(field, "a parameter name is a Python-style identifier, not operation_id")
    if not isinstance(spec, dict):
        raise bad(field, 'must be a table such as { type = "int", default = 1 }')
    unknown = sorted(set(spec) - _PARAM_KEYS)
    if unknown:
        raise bad(f"{field}.{unknown[0]}", f"unknown; allowed: {', '.join(sorted(_PARAM_KEYS))}")
    kind = spec.get("type")
    if kind not in ("int", "float", "str", "bool", "path"):
        raise bad(f"{field}.type", "must be one of int, float, str, bool, path")
    for bound in ("min", "max"):
        value = spec.get(bound)
        if value is not None and (
            kind not in ("int", "float")
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            raise bad(f"{field}.{bound}", "only numbers, and only for int and float parameters")
    choices = spec.get("choices")
    if choices is not None and (not isinstance(choices, list) or not choices):
        raise bad(f"{field}.choices", "must be a non-empty list")
    help_text = spec.get("help")
    if help_text is not None and not isinstance(help_text, str):
        raise bad(f"{field}.help", "must be a string")
    parameter = Parameter(
        name=name,
        type=kind,
        default=spec.get("default"),
        required="default" not in spec,
        min=spec.get("min"),
        max=spec.get("max"),
        choices=choices,
        help=help_text,
    )
    if "default" in spec and kind != "path":
        try:
            parameter.check(spec["default"], (), Path("."))
        except ParameterError as exc:
            raise bad(f"{field}.default", exc.message.split(": ", 1)[1]) from exc
    return parameter
