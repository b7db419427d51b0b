"""A run on Ray: the bridge's session (spool, idempotent pushes, heartbeats) inside a Ray actor,
or an operator's declared script run as a process of the actor (`ScriptActor`).

The server (`mcp_server.core.ray_backend`) creates one detached, named actor per run with the
resources the run asks for, then calls, in order and each idempotent:

    ready()   the actor is placed and its process up: its pid, node and device
    start()   train: `SessionManager.start` on this worker, exactly as a bridge does
    wait(s)   block up to `s` seconds; the session once trained and delivered, else None
    cancel()  stop within one batch (the session flushes what it has, then `wait` returns)

Everything the run produces goes to the server over HTTP through the one ingest route, from a
durable spool in a fresh folder on the worker's node, so the server needs nothing from Ray to
store a run; Ray only places, cancels and tells the server when a worker died. The actor is
detached, so it outlives the server process: a restarted server finds it again by name
(`actor_name`) and calls `wait` again. Once everything is delivered it exits by itself after
`LINGER_S` (the server kills it sooner when it collects the result).

A script run's actor answers the same four calls: `start` starts the argv the server checked and
substituted, in its own process group, with the run's URL, id, token and push credential in its
environment (the script's `training_mcp.init()` pushes from there); `cancel` signals the group
(SIGINT, then SIGTERM and SIGKILL after the grace period); `wait` answers the exit code, the stop
reason and the end of stderr, and the server turns them into the run's status. Its stdout and
stderr go to bounded rotating logs in a fresh folder on the node: `logs(query)` reads them while
it runs, and `collect_logs()` hands the kept files to the server (which keeps them with the run)
and removes them here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from host_bridge.protocol import SessionRequest
from host_bridge.script_logs import LogsQuery, read_log
from host_bridge.scripts import ScriptProcess
from host_bridge.sessions import BridgeOptions, SessionError, SessionManager

__all__ = [
    "ACTOR_PREFIX",
    "LINGER_S",
    "RunActor",
    "ScriptActor",
    "actor_name",
    "worker_data_dir",
]

log = logging.getLogger(__name__)

ACTOR_PREFIX = "training-mcp-run-"
LINGER_S = 60.0  # a finished actor waits this long for the server to collect it, then exits


def actor_name(operation_id: str) -> str:
    """The actor's name in the server's Ray namespace: how a restarted server finds it."""
    return ACTOR_PREFIX + operation_id


def worker_data_dir() -> Path:
    """Where actors on this node keep their spools (`TRAINING_MCP_RAY_DATA_DIR` on the worker,
    else the system's temporary folder)."""
    base = os.environ.get("TRAINING_MCP_RAY_DATA_DIR")
    return Path(base) if base else Path(tempfile.gettempdir()) / "training-mcp-ray"


class RunActor:
    """One run's actor. The server wraps it with `ray.remote` (this module never imports ray at
    import time, so it can be read without Ray installed); its methods answer plain JSON-able
    dicts so the two sides share no pickled classes."""

    def __init__(
        self,
        request_json: str,
        options: dict[str, Any],
        allow_factory: bool,
        data_roots: list[str],
    ) -> None:
        """`options`: the Ray resources this actor was created with (`ready` echoes them, so a
        restarted server can start the run again with the same)."""
        self._request = SessionRequest.model_validate_json(request_json)
        self._options = options
        operation_id = self._request.operation_id
        base = worker_data_dir()
        base.mkdir(parents=True, exist_ok=True)
        # A fresh folder per actor: a retry of the run on this node must not find the spool of
        # the attempt that died and take the run as already started.
        self._dir = Path(tempfile.mkdtemp(prefix=f"{operation_id}-", dir=base))
        roots = tuple(Path(r) for r in data_roots) or (self._dir,)
        # The server URL came through Ray from the server itself, not from a request anyone on
        # the network could send a bridge: whoever may create actors runs code here anyway.
        self._manager = SessionManager(
            BridgeOptions(
                data_dir=self._dir,
                max_sessions=1,
                data_roots=roots,
                allow_factory=allow_factory,
                allowed_servers=(self._request.server_url,),
            )
        )

    def ready(self) -> dict[str, Any]:
        """The actor is up: its pid, its node's address, the device `spec.device` means here and
        the resources it holds."""
        import ray

        from trainer.batches import resolve_device  # imports torch

        spec = self._request.spec
        assert spec is not None  # a training run's request (scripts have ScriptActor)
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "device": str(resolve_device(spec.device)),
            "options": self._options,
        }

    def start(self) -> dict[str, Any]:
        """Start training (once; again returns the session as it is). `{"session": ...}`, or
        `{"error": {"code", "message", "field"}}` when this worker refuses the spec."""
        try:
            info, started = self._manager.start(self._request)
        except SessionError as exc:
            return {"error": {"code": exc.code, "message": exc.message, "field": exc.field}}
        if started:
            threading.Thread(target=self._exit_when_collected, daemon=True).start()
        return {"session": info.model_dump(mode="json")}

    def info(self) -> dict[str, Any] | None:
        info = self._manager.spool.get(self._request.operation_id)
        return None if info is None else info.model_dump(mode="json")

    def cancel(self, reason: str) -> dict[str, Any] | None:
        """Stop training within one batch; the finished epochs are delivered first."""
        try:
            info, _ = self._manager.cancel(self._request.operation_id, reason)
        except SessionError:  # never started
            return None
        return info.model_dump(mode="json")

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        """The session once trained and delivered (or given up), or None after `timeout_s`."""
        try:
            info = self._manager.wait(self._request.operation_id, timeout_s)
        except SessionError:
            return None
        if info is None or not info.finished:
            return None
        return info.model_dump(mode="json")

    def _exit_when_collected(self) -> None:
        self._manager.wait(self._request.operation_id)
        time.sleep(LINGER_S)
        import ray

        log.info("run %s: not collected by the server; exiting", self._request.operation_id)
        self._manager.close(timeout_s=1.0)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


class ScriptActor:
    """One script run's actor (wrapped with `ray.remote` by the server, as `RunActor` is).

    `request`: {"operation_id", "argv", "cwd", "env", "grace_s"}: the command the server checked
    and substituted (never a shell), the folder it runs in on this node, and the variables the
    script's light client reads (TRAINING_MCP_URL, ..._OPERATION_ID, ..._TOKEN, ..._PUSH_TOKEN).
    The script's stdout goes to this worker's log (Ray's log folder on the node); its stderr too,
    its last lines kept for the error of a failed run."""

    def __init__(self, request: dict[str, Any], options: dict[str, Any]) -> None:
        self._request = request
        self._options = options
        self._lock = threading.Lock()
        self._script: ScriptProcess | None = None
        self._stop_reason: str | None = None
        base = worker_data_dir()
        base.mkdir(parents=True, exist_ok=True)
        operation_id = request["operation_id"]
        self._logs = Path(tempfile.mkdtemp(prefix=f"{operation_id}-logs-", dir=base))

    def ready(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node": context.get_node_id(),
            "device": "cuda" if context.get_accelerator_ids().get("GPU") else "cpu",
            "options": self._options,
        }

    def start(self) -> dict[str, Any]:
        """Start the command (once). `{"session": {"pid"}}`, or `{"error": {...}}` when it
        cannot start here."""
        with self._lock:
            if self._script is None:
                env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINING_MCP_")}
                env.update(self._request["env"], PYTHONUNBUFFERED="1")
                argv = list(self._request["argv"])
                try:
                    self._script = ScriptProcess(argv, self._request["cwd"], env, logs=self._logs)
                except OSError as exc:
                    message = f"the command could not start: {exc.strerror or exc} ({argv[0]})"
                    return {"error": {"code": "invalid_input", "message": message, "field": None}}
                threading.Thread(target=self._exit_when_ended, daemon=True).start()
            return {"session": {"pid": self._script.pid}}

    def cancel(self, reason: str) -> dict[str, Any] | None:
        """SIGINT to the group now, SIGTERM and SIGKILL after the grace period each (in the
        background: `wait` answers once it has ended)."""
        with self._lock:
            script = self._script
            if script is None or script.ended.is_set():
                return None
            if self._stop_reason is None:
                self._stop_reason = reason
                grace = float(self._request.get("grace_s", 5.0))
                threading.Thread(target=script.stop, args=(grace,), daemon=True).start()
        return {"pid": script.pid}

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        """{"returncode", "stop_reason", "stderr_tail"} once the script has exited, else None
        after `timeout_s`."""
        script = self._script
        if script is None:  # not started: nothing can end (as `start` comes first, never seen)
            time.sleep(timeout_s)
            return None
        if not script.ended.wait(timeout_s):
            return None
        returncode, tail = script.result()
        return {"returncode": returncode, "stop_reason": self._stop_reason, "stderr_tail": tail}

    def logs(self, query: dict[str, Any]) -> dict[str, Any]:
        """One stream of the script's output (a `LogsQuery`), as `OperationLogs` fields."""
        asked = LogsQuery.model_validate(query)
        read = read_log(
            self._logs,
            self._request["operation_id"],
            asked.stream,
            tail=asked.tail,
            cursor=asked.cursor,
        )
        return read.model_dump()

    def collect_logs(self) -> dict[str, bytes]:
        """The kept log files by name (bounded: each stream's few rotating files), removed here
        once read: the server keeps them with the run from now on."""
        files = {p.name: p.read_bytes() for p in self._logs.iterdir() if p.is_file()}
        shutil.rmtree(self._logs, ignore_errors=True)
        return files

    def _exit_when_ended(self) -> None:
        assert self._script is not None
        self._script.ended.wait()
        time.sleep(LINGER_S)
        import ray

        operation_id = self._request["operation_id"]
        log.info("script run %s: not collected by the server; exiting", operation_id)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
