"""Script runs: a declared entry point started as a process of its own, watched and stopped.

    start_training(entry_point="finetune", params={...})
      -> the parameters checked and substituted (entry_points.py), the run created `running`
      -> the command in its own process group (no shell), with TRAINING_MCP_URL,
         TRAINING_MCP_OPERATION_ID and TRAINING_MCP_TOKEN in its environment: the script's
         `training_mcp.init()` attaches to the run and pushes its epochs over HTTP
      -> stdout and stderr into bounded rotating logs (logs.py)
      -> the exit: 0 completed; else failed, with the last lines of stderr in the error;
         a run stopped by request ends cancelled whatever its exit code.

`stop_training` sends SIGINT to the group (a Python script gets KeyboardInterrupt), then SIGTERM
after the grace period, then SIGKILL: a script that ignores signals is still gone. On shutdown the
server ends its scripts the same way and marks their runs interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup

from mcp_server.config import ServerConfig
from mcp_server.core.entry_points import EntryPoint, EntryPointList, load_entry_points
from mcp_server.core.errors import InvalidInputError, ServiceError, UnavailableError
from mcp_server.core.ingest import Ingestor
from mcp_server.core.logs import LogStream, OperationLogs, RotatingLog, read_log
from mcp_server.core.system import RunSampling
from mcp_server.core.tensorboard import follow_logdir
from storage import (
    Backend,
    Database,
    IllegalTransitionError,
    Operation,
    OperationStatus,
    StorageError,
    create_operation,
    get_operation,
    issue_push_credential,
    list_operations,
    new_operation_id,
)
from training_mcp.points import MetricPoint

__all__ = ["ScriptRunner", "ScriptSettings", "script_outcome"]

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class ScriptSettings:
    """How script runs are run: where their logs go, how they reach the server, the limits."""

    entry_points: Mapping[str, EntryPoint]
    entry_points_file: str | None
    logs_root: Path
    server_url: str
    token: str | None
    data_roots: tuple[Path, ...]
    grace_s: float = 5.0
    log_bytes: int = 1024 * 1024
    log_files: int = 3

    @classmethod
    def from_config(cls, config: ServerConfig) -> ScriptSettings:
        """`EntryPointFileError` if the declared file is unusable."""
        path = config.entry_points_file
        return cls(
            entry_points=load_entry_points(path) if path is not None else {},
            entry_points_file=str(path) if path is not None else None,
            logs_root=config.data_dir / "logs",
            server_url=config.public_url or "",
            token=config.token.reveal() if config.token else None,
            data_roots=config.allowed_data_roots,
            grace_s=config.script_grace_s,
        )


def script_outcome(
    returncode: int, stop_reason: str | None, stderr_tail: str
) -> tuple[OperationStatus, str | None, str | None]:
    """(status, error, reason) of a script that exited with `returncode`."""
    if stop_reason is not None:
        return OperationStatus.CANCELLED, None, stop_reason
    if returncode == 0:
        return OperationStatus.COMPLETED, None, None
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    error = f"the script ended with {how}"
    if stderr_tail:
        error += f"; the end of its stderr:\n{stderr_tail}"
    return OperationStatus.FAILED, error[-4000:], None


@dataclass
class _Live:
    process: Process
    stop_reason: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class ScriptRunner:
    """Every script run of this server: start, stop, logs; `active` counts them."""

    def __init__(
        self,
        settings: ScriptSettings,
        db: Database,
        ingestor: Ingestor,
        tg: TaskGroup,
        busy: Callable[[], bool],
        system: RunSampling | None = None,
    ) -> None:
        """`busy()`: whether the server's concurrency limit is reached (local runs count);
        `system`: how the scripts' processes are sampled (`system/...` metrics)."""
        self._system = system
        self._settings = settings
        self._db = db
        self._ingestor = ingestor
        self._tg = tg
        self._busy = busy
        self._live: dict[str, _Live] = {}

    @property
    def active(self) -> int:
        return len(self._live)

    def entry_points(self) -> EntryPointList:
        return EntryPointList(
            entry_points=list(self._settings.entry_points.values()),
            file=self._settings.entry_points_file,
        )

    async def start(
        self,
        entry_point: str,
        params: Mapping[str, Any] | None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Operation:
        declared = self._settings.entry_points
        entry = declared.get(entry_point)
        if entry is None:
            allowed = ", ".join(sorted(declared)) or "none (start the server with --entry-points)"
            raise InvalidInputError(
                f"entry_point: {entry_point!r} is not declared; declared: {allowed}",
                field="entry_point",
            )
        operation_id = new_operation_id()
        argv, values = entry.resolve(params, operation_id, self._settings.data_roots)
        if self._busy():
            raise UnavailableError(
                "entry_point: the server runs as many trainings as it may at once "
                "(--max-concurrent-runs); stop one or try later",
                field="entry_point",
            )
        epochs = values.get("epochs")
        op = await create_operation(
            self._db,
            name=name or entry_point,
            backend=Backend.SCRIPT,
            spec={"entry_point": entry_point, "params": values, "argv": argv},
            epochs_total=epochs if isinstance(epochs, int) and epochs > 0 else None,
            tags=tags,
            status=OperationStatus.RUNNING,
            operation_id=operation_id,
        )
        await self._ingestor.announce(op)
        push = await issue_push_credential(self._db, operation_id)  # only the script pushes
        try:
            process = await anyio.open_process(
                argv,
                cwd=entry.cwd,
                env=self._environment(operation_id, push),
                start_new_session=True,  # its own process group: signals reach its children
            )
        except OSError as exc:
            return await self._ingestor.record_status(
                operation_id,
                OperationStatus.FAILED,
                error=f"the command could not start: {exc.strerror or exc} ({argv[0]})",
            )
        live = _Live(process)
        self._live[operation_id] = live
        self._tg.start_soon(self._watch, operation_id, live, entry.logdir(operation_id))
        log.info("script run %s: %s (pid %d)", operation_id, entry_point, process.pid)
        return op

    def _environment(self, operation_id: str, push_token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINING_MCP_")}
        env.update(
            TRAINING_MCP_URL=self._settings.server_url,
            TRAINING_MCP_OPERATION_ID=operation_id,
            TRAINING_MCP_TOKEN=self._settings.token or "",
            TRAINING_MCP_PUSH_TOKEN=push_token,  # the run's push credential
            PYTHONUNBUFFERED="1",  # so its logs show as they are written
        )
        return env

    async def stop(self, op: Operation, reason: str) -> Operation:
        """SIGINT, then SIGTERM after the grace period, then SIGKILL; returns the ended run."""
        live = self._live.get(op.operation_id)
        if live is None:  # not a process of this server (it ended, or an earlier server's)
            return await self._finish(op.operation_id, OperationStatus.CANCELLED, reason=reason)
        live.stop_reason = reason
        await self._end(live)
        return await get_operation(self._db, op.operation_id)

    async def _end(self, live: _Live) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            _signal_group(live.process.pid, sig)
            with anyio.move_on_after(self._settings.grace_s):
                await live.done.wait()
            if live.done.is_set():
                return

    def logs(
        self,
        operation_id: str,
        stream: LogStream,
        *,
        tail: int | None = None,
        cursor: int | None = None,
    ) -> OperationLogs:
        return read_log(self._folder(operation_id), operation_id, stream, tail=tail, cursor=cursor)

    def _folder(self, operation_id: str) -> Path:
        return self._settings.logs_root / operation_id

    async def _watch(self, operation_id: str, live: _Live, logdir: Path | None) -> None:
        process = live.process
        folder = self._folder(operation_id)
        out = RotatingLog(folder, "stdout", self._settings.log_bytes, self._settings.log_files)
        err = RotatingLog(folder, "stderr", self._settings.log_bytes, self._settings.log_files)
        exited = anyio.Event()
        try:
            with live.scope:
                async with anyio.create_task_group() as tg:
                    if self._system is not None:  # the script's session, sampled from here
                        tg.start_soon(self._system.follow, operation_id, exited, process.pid)
                    assert process.stdout is not None and process.stderr is not None
                    tg.start_soon(_copy, process.stdout, out)
                    tg.start_soon(_copy, process.stderr, err)
                    if logdir is not None:
                        tg.start_soon(
                            follow_logdir,
                            logdir,
                            lambda points: self._store(operation_id, points),
                            lambda: process.returncode is None,
                        )
                    returncode = await process.wait()
                    exited.set()
                status, error, reason = script_outcome(
                    returncode, live.stop_reason, err.tail_text(STDERR_TAIL_LINES)
                )
                await self._finish(operation_id, status, error=error, reason=reason)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:  # the server is shutting down
                    live.done.set()  # nobody waits: end it at once, group and all
                    _signal_group(process.pid, signal.SIGTERM)
                    with anyio.move_on_after(self._settings.grace_s):
                        await process.wait()
                    _signal_group(process.pid, signal.SIGKILL)
                    await self._finish(
                        operation_id,
                        OperationStatus.INTERRUPTED,
                        reason="the server stopped while this script ran; its stored epochs "
                        "are kept",
                    )
                out.close()
                err.close()
                self._live.pop(operation_id, None)
                live.done.set()

    async def _store(self, operation_id: str, points: list[MetricPoint]) -> None:
        try:
            await self._ingestor.record_points(operation_id, [p.to_json() for p in points])
        except (StorageError, ServiceError) as exc:  # a bad scalar must not end the watch
            log.warning("script run %s: TensorBoard scalars not stored: %s", operation_id, exc)

    def shutdown(self) -> None:
        """The server is stopping: end every script (their runs are marked interrupted)."""
        for live in list(self._live.values()):
            live.scope.cancel()

    async def _finish(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
    ) -> Operation:
        try:
            return await self._ingestor.record_status(
                operation_id, status, error=error, reason=reason
            )
        except IllegalTransitionError:  # it ended meanwhile: that end stands
            return await get_operation(self._db, operation_id)

    async def mark_orphans(self) -> int:
        """Script runs an earlier server left running: their process is not ours to watch."""
        count = 0
        for op in await list_operations(
            self._db, status=OperationStatus.RUNNING, backend=Backend.SCRIPT, limit=10_000
        ):
            await self._finish(
                op.operation_id,
                OperationStatus.INTERRUPTED,
                reason="the server stopped while this script ran; its stored epochs are kept",
            )
            count += 1
        return count


async def _copy(stream: Any, sink: RotatingLog) -> None:
    async for chunk in stream:
        sink.write(chunk)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The group's id is the leader's pid (start_new_session); a gone group is fine.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
