"""A run on Ray: the bridge's session (spool, idempotent pushes, heartbeats) inside a Ray actor.

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
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from host_bridge.protocol import SessionRequest
from host_bridge.sessions import BridgeOptions, SessionError, SessionManager

__all__ = ["ACTOR_PREFIX", "LINGER_S", "RunActor", "actor_name", "worker_data_dir"]

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

        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "device": str(resolve_device(self._request.spec.device)),
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
