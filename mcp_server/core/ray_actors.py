"""What a Ray run's actor is given, decided without Ray (pure): the resources it reserves, the
class and arguments it is created with, and the words for what went wrong.

A training run's actor (`host_bridge.ray_worker.RunActor`) gets a bridge `SessionRequest`; an
entry point's (`ScriptActor`) the checked argv, its folder and the environment the script's
light client reads. Both carry the run's push credential: only that actor may push into the run.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from host_bridge.protocol import SessionRequest
from mcp_server.config import ServerConfig
from mcp_server.core.entry_points import EntryPoint, EntryPointList
from mcp_server.core.errors import InvalidInputError
from mcp_server.core.models import RunResources
from storage import Operation
from trainer.spec import TrainingSpec

__all__ = ["actor_args", "actor_options", "declared_entry_point", "describe_death"]


def actor_options(spec: TrainingSpec | None, resources: RunResources | None) -> dict[str, Any]:
    """The Ray resources a run reserves (pure): 1 CPU, 1 GPU for device 'cuda', no memory
    reservation, unless `resources` says otherwise (`spec` None: a script run, no GPU unless
    asked for)."""
    wanted = resources or RunResources.model_validate({})
    cuda = spec is not None and spec.device == "cuda"
    gpus = wanted.num_gpus if wanted.num_gpus is not None else (1 if cuda else 0)
    if cuda and gpus == 0:
        raise InvalidInputError(
            "resources.num_gpus: device 'cuda' needs a GPU; ask for num_gpus > 0 or use "
            "device 'cpu'",
            field="resources.num_gpus",
        )
    options: dict[str, Any] = {
        "num_cpus": wanted.num_cpus if wanted.num_cpus is not None else 1,
        "num_gpus": gpus,
    }
    if wanted.memory_mb is not None:
        options["memory"] = wanted.memory_mb * 1024 * 1024
    return options


def declared_entry_point(declared: EntryPointList, name: str) -> EntryPoint:
    """The entry point `name` of those the operator declared, or the error local runs give."""
    for entry in declared.entry_points:
        if entry.name == name:
            return entry
    names = ", ".join(sorted(e.name for e in declared.entry_points))
    raise InvalidInputError(
        f"entry_point: {name!r} is not declared; declared: "
        + (names or "none (start the server with --entry-points)"),
        field="entry_point",
    )


def describe_death(exc: BaseException) -> str:
    """A dead actor's error in one line: Ray's message without its indented id lines."""
    text = str(getattr(exc, "error_msg", None) or exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("\t")]
    return " ".join(lines)[:500] or type(exc).__name__


def actor_args(
    op: Operation,
    options: dict[str, Any],
    config: ServerConfig,
    push_token: str,
    heartbeat_interval_s: float,
) -> tuple[str, tuple[Any, ...]]:
    """(the `ray_worker` class, its arguments) for one attempt of `op`."""
    token = config.token.reveal() if config.token else None
    if "entry_point" in op.spec:  # a declared script (see RayBackend.dispatch_script)
        env = {
            "TRAINING_MCP_URL": str(config.public_url),
            "TRAINING_MCP_OPERATION_ID": op.operation_id,
            "TRAINING_MCP_TOKEN": token or "",
            "TRAINING_MCP_PUSH_TOKEN": push_token,
        }
        script = {
            "operation_id": op.operation_id,
            "argv": list(op.spec["argv"]),
            "cwd": op.spec["cwd"],
            "env": env,
            "grace_s": op.spec.get("stop_grace_s", config.script_grace_s),
        }
        return "ScriptActor", (script, options)
    request = SessionRequest(
        operation_id=op.operation_id,
        spec=TrainingSpec.model_validate(op.spec),
        server_url=str(config.public_url),
        server_token=SecretStr(token) if token else None,
        heartbeat_interval_s=heartbeat_interval_s,
        push_token=SecretStr(push_token),
    )
    roots = [str(p) for p in config.allowed_data_roots]
    return "RunActor", (request.model_dump_json(), options, config.allow_factory, roots)
