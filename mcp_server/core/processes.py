"""Script runs: a declared entry point started as a process of its own, watched and stopped.

    start_training(entry_point="finetune", params={...})
      -> the parameters checked and substituted (entry_points.py), the run created `running`
      -> a relay in a session of its own (relay.py) starts the command in its process group
         (no shell), with TRAINING_MCP_URL, TRAINING_MCP_OPERATION_ID and TRAINING_MCP_TOKEN in
         its environment: the script's `training_mcp.init()` attaches to the run and pushes
         its epochs over HTTP; the relay writes its stdout and stderr to bounded rotating logs
      -> the exit (the relay's exit.json): 0 completed; else failed, with the last lines of
         stderr in the error; a run stopped by request ends cancelled whatever its exit code.

Each run also gets a checkpoint folder of the server's, `<artifacts>/<operation_id>/` as a
built-in run's (TRAINING_MCP_CHECKPOINT_DIR): what the script saves there through
`training_mcp`'s `save_checkpoint` is what `resume_training` and `fork_training` go on from
(`script_steering.py`); `launch` starts the same run again, or a fork, with
TRAINING_MCP_RESUME_EPOCH naming the checkpoint.

`stop_training` first sets the run's stop request, which the script's client reads in the answer
to its next push (`training_mcp.Run.should_stop`; the Lightning and Hugging Face callbacks end
training at the next step), then, if it is still running after the notice, sends SIGINT to the
group (a Python script gets KeyboardInterrupt), SIGTERM after the grace period, then SIGKILL: a
script that ignores signals is still gone.

A script outlives its server: a server that stops (gracefully or killed) leaves its scripts
training, and the next server on the same data directory re-attaches the ones whose relay still
runs (pid and start time checked, so a reused pid is never taken for it) and marks the others
`interrupted`; meanwhile the script's client keeps its points queued and retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from host_bridge.rotating_log import LOG_BYTES, LOG_FILES
from host_bridge.scripts import STDERR_TAIL_LINES, STOP_SIGNALS, script_end, script_environment
from mcp_server.config import ServerConfig
from mcp_server.core.entry_points import (
    EntryPoint,
    EntryPointList,
    epochs_total,
    load_entry_points,
    resolve,
)
from mcp_server.core.errors import InvalidInputError, ServiceError, UnavailableError
from mcp_server.core.ingest import Ingestor
from mcp_server.core.logs import LogStream, OperationLogs, read_log
from mcp_server.core.relay import (
    EXIT_FILE,
    PROCESS_FILE,
    process_identity,
    read_json_file,
    relay_argv,
)
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

INTERRUPTED_REASON = "the server stopped while this script ran{how}; its stored epochs are kept"
_POLL_S = 0.5  # only where pidfd_open is missing: how often a re-attached process is looked at


@dataclass(frozen=True)
class ScriptSettings:
    """How script runs are run: where their logs go, how they reach the server, the limits."""

    entry_points: Mapping[str, EntryPoint]
    entry_points_file: str | None
    logs_root: Path
    server_url: str
    token: str | None
    data_roots: tuple[Path, ...]
    checkpoints_root: Path | None = None  # a folder per run in it; None: no checkpoints
    checkpoint_budget: int | None = None  # bytes one run's checkpoints may take
    grace_s: float = 5.0
    notice_s: float = 1.0  # after the stop request, before SIGINT: time to end at a step
    log_bytes: int = LOG_BYTES
    log_files: int = LOG_FILES

    @classmethod
    def from_config(cls, config: ServerConfig) -> ScriptSettings:
        """`EntryPointFileError` if the declared file is unusable."""
        path = config.entry_points_file
        return cls(
            entry_points=load_entry_points(path) if path is not None else {},
            entry_points_file=str(path) if path is not None else None,
            logs_root=config.logs_dir,
            server_url=config.public_url or "",
            token=config.token.reveal() if config.token else None,
            data_roots=config.allowed_data_roots,
            checkpoints_root=config.artifacts_dir,
            checkpoint_budget=config.checkpoints.per_run,
            grace_s=config.script_grace_s,
            notice_s=min(1.0, config.script_grace_s),
        )


def script_outcome(
    returncode: int, stop_reason: str | None, stderr_tail: str
) -> tuple[OperationStatus, str | None, str | None]:
    """(status, error, reason) of a script that exited with `returncode`."""
    status, error, reason = script_end(returncode, stop_reason, stderr_tail)
    return OperationStatus(status), error, reason


@dataclass
class _Live:
    """A script run followed by this server: its relay leads the run's process group."""

    pid: int
    identity: str | None  # process_identity(pid) when it started: guards against pid reuse
    popen: subprocess.Popen[bytes] | None  # when this server started it (and so reaps it)
    stop_reason: str | None = None
    exited: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def same_process(self) -> bool:
        """Whether `pid` is still the relay (not exited, not a reused pid)."""
        if self.exited:
            return False
        if self.popen is not None:  # a child's pid is not reused before it is reaped
            return self.popen.returncode is None
        return self.identity is not None and process_identity(self.pid) == self.identity


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

    def running(self) -> list[str]:
        """The runs whose script this server follows now (they may be saving checkpoints)."""
        return list(self._live)

    def entry_points(self) -> EntryPointList:
        return EntryPointList(
            entry_points=list(self._settings.entry_points.values()),
            file=self._settings.entry_points_file,
        )

    def following(self, operation_id: str) -> bool:
        """Whether a process of the run still runs here (one that exited is only having its
        end recorded: a resume may start the next)."""
        live = self._live.get(operation_id)
        return live is not None and not live.exited

    def stop_request(self, operation_id: str) -> str | None:
        """Why the run was asked to stop, while its script still runs (None: it was not)."""
        live = self._live.get(operation_id)
        return live.stop_reason if live is not None else None

    def declared(self, entry_point: str, field: str = "entry_point") -> EntryPoint:
        """The declared entry point; `InvalidInputError` naming `field` and those declared."""
        declared = self._settings.entry_points
        entry = declared.get(entry_point)
        if entry is None:
            allowed = ", ".join(sorted(declared)) or "none (start the server with --entry-points)"
            raise InvalidInputError(
                f"{field}: {entry_point!r} is not declared; declared: {allowed}", field=field
            )
        return entry

    def resolve(
        self, entry: EntryPoint, params: Mapping[str, Any] | None, operation_id: str
    ) -> tuple[list[str], dict[str, Any]]:
        """(argv, values) for these parameters; `InvalidInputError` naming the parameter."""
        return resolve(entry, params, operation_id, self._settings.data_roots)

    def check_room(self, field: str = "entry_point") -> None:
        """`UnavailableError` when the server runs as many trainings as it may at once."""
        if self._busy():
            raise UnavailableError(
                f"{field}: the server runs as many trainings as it may at once "
                "(--max-concurrent-runs); stop one or try later",
                field=field,
            )

    def checkpoint_folder(self, operation_id: str) -> Path | None:
        """Where the run's script saves its checkpoints (None: this server gives none)."""
        root = self._settings.checkpoints_root
        return root / operation_id if root is not None else None

    async def start(
        self,
        entry_point: str,
        params: Mapping[str, Any] | None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Operation:
        entry = self.declared(entry_point)
        operation_id = new_operation_id()
        argv, values = self.resolve(entry, params, operation_id)
        self.check_room()
        op = await create_operation(
            self._db,
            name=name or entry_point,
            backend=Backend.SCRIPT,
            spec={"entry_point": entry_point, "params": values, "argv": argv},
            epochs_total=epochs_total(values),
            tags=tags,
            status=OperationStatus.RUNNING,
            operation_id=operation_id,
        )
        await self._ingestor.announce(op)
        return await self.launch(op, entry, argv)

    async def launch(
        self, op: Operation, entry: EntryPoint, argv: list[str], resume_epoch: int | None = None
    ) -> Operation:
        """Start `argv` for the running `op` (a new run, or one resumed or forked: then the
        script's client reads `resume_epoch` and finds its checkpoint in the run's folder)."""
        operation_id = op.operation_id
        push = await issue_push_credential(self._db, operation_id)  # only the script pushes
        folder = self._folder(operation_id)
        (folder / EXIT_FILE).unlink(missing_ok=True)  # a resumed run's earlier end
        command = relay_argv(
            folder, self._settings.log_bytes, self._settings.log_files, entry.cwd, argv
        )
        env = self._environment(operation_id, push, resume_epoch)
        try:
            popen = await anyio.to_thread.run_sync(_spawn, command, folder, env)
        except OSError as exc:
            return await self._finish(
                operation_id,
                OperationStatus.FAILED,
                error=f"the script's relay could not start: {exc.strerror or exc}",
            )
        live = _Live(popen.pid, process_identity(popen.pid), popen)
        self._live[operation_id] = live
        self._tg.start_soon(self._watch, operation_id, live, entry.logdir(operation_id))
        log.info("script run %s: %s (relay pid %d)", operation_id, entry.name, popen.pid)
        return op

    def _environment(
        self, operation_id: str, push_token: str, resume_epoch: int | None
    ) -> dict[str, str]:
        checkpoints = self.checkpoint_folder(operation_id)
        if checkpoints is not None:
            checkpoints.mkdir(parents=True, exist_ok=True)
        return script_environment(
            os.environ,
            url=self._settings.server_url,
            operation_id=operation_id,
            token=self._settings.token,
            push_token=push_token,
            checkpoints=checkpoints,
            resume_epoch=resume_epoch,
            checkpoint_budget=self._settings.checkpoint_budget,
        )

    async def stop(self, op: Operation, reason: str) -> Operation:
        """The stop request, then SIGINT, SIGTERM after the grace period, SIGKILL; returns
        the ended run."""
        live = self._live.get(op.operation_id)
        if live is None:  # not a process this server follows (it ended meanwhile)
            return await self._finish(op.operation_id, OperationStatus.CANCELLED, reason=reason)
        live.stop_reason = reason  # the client sees it in its next push answer
        with anyio.move_on_after(self._settings.notice_s):
            await live.done.wait()
        entry = self._settings.entry_points.get(op.spec.get("entry_point", ""))
        grace_s = self._settings.grace_s if entry is None else entry.grace_s(self._settings.grace_s)
        for sig in STOP_SIGNALS:
            if live.done.is_set():
                break
            if live.same_process():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(live.pid, sig)  # the group's id is the relay's pid
            with anyio.move_on_after(grace_s):
                await live.done.wait()
        return await get_operation(self._db, op.operation_id)

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
        exited = anyio.Event()
        try:
            with live.scope:
                async with anyio.create_task_group() as tg:
                    if self._system is not None:  # the relay's session: it and the script
                        tg.start_soon(self._system.follow, operation_id, exited, live.pid)
                    if logdir is not None:
                        tg.start_soon(
                            follow_logdir,
                            logdir,
                            lambda points: self._store(operation_id, points),
                            lambda: not live.exited,
                        )
                    await _until_exited(live)
                    live.exited = True
                    exited.set()
                status, error, reason = self._outcome(operation_id, live)
                await self._finish(operation_id, status, error=error, reason=reason)
        finally:
            # Cancelled: the server is stopping; the script trains on, for the next server.
            if self._live.get(operation_id) is live:  # not a resume started since its end
                del self._live[operation_id]
            live.done.set()

    def _outcome(
        self, operation_id: str, live: _Live
    ) -> tuple[OperationStatus, str | None, str | None]:
        folder = self._folder(operation_id)
        ended = read_json_file(folder / EXIT_FILE) or {}
        tail = "\n".join(read_log(folder, operation_id, "stderr", tail=STDERR_TAIL_LINES).lines)
        returncode = ended.get("returncode")
        if isinstance(returncode, int):
            return script_outcome(returncode, live.stop_reason, tail)
        if live.stop_reason is not None:
            return OperationStatus.CANCELLED, None, live.stop_reason
        if "error" in ended:
            return OperationStatus.FAILED, f"the command could not start: {ended['error']}", None
        # No exit.json: the relay itself was killed, and its process group with it.
        code = live.popen.returncode if live.popen is not None else None
        how = f" by signal {-code}" if code is not None and code < 0 else ""
        error = f"the script's process group was killed{how}"
        if tail:
            error += f"; the end of its stderr:\n{tail}"
        return OperationStatus.FAILED, error[-4000:], None

    async def _store(self, operation_id: str, points: list[MetricPoint]) -> None:
        try:
            await self._ingestor.record_points(operation_id, [p.to_json() for p in points])
        except (StorageError, ServiceError) as exc:  # a bad scalar must not end the watch
            log.warning("script run %s: TensorBoard scalars not stored: %s", operation_id, exc)

    def shutdown(self) -> None:
        """The server is stopping: stop following the scripts; they train on, and the next
        server on this data directory re-attaches them (stop_training ends one)."""
        if self._live:
            log.warning(
                "%d script runs keep running; the next server re-attaches them", len(self._live)
            )
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

    async def reattach(self) -> tuple[int, int]:
        """Script runs an earlier server left running: follow again those whose relay still
        runs, mark the others interrupted. Returns (re-attached, interrupted)."""
        again = interrupted = 0
        for op in await list_operations(
            self._db, status=OperationStatus.RUNNING, backend=Backend.SCRIPT, limit=10_000
        ):
            folder = self._folder(op.operation_id)
            record = read_json_file(folder / PROCESS_FILE) or {}
            ended = read_json_file(folder / EXIT_FILE)
            pid, identity = record.get("pid"), record.get("identity")
            if (
                ended is None
                and isinstance(pid, int)
                and isinstance(identity, str)
                and process_identity(pid) == identity
            ):
                live = _Live(pid, identity, None)
                self._live[op.operation_id] = live
                entry = self._settings.entry_points.get(str(op.spec.get("entry_point")))
                logdir = entry.logdir(op.operation_id) if entry is not None else None
                self._tg.start_soon(self._watch, op.operation_id, live, logdir)
                log.info("script run %s: re-attached (relay pid %d)", op.operation_id, pid)
                again += 1
                continue
            code = (ended or {}).get("returncode")
            how = f" (it ended with exit code {code} unwatched)" if isinstance(code, int) else ""
            await self._finish(
                op.operation_id,
                OperationStatus.INTERRUPTED,
                reason=INTERRUPTED_REASON.format(how=how),
            )
            interrupted += 1
        return again, interrupted


def _spawn(command: list[str], folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Not anyio.open_process: asyncio kills a child it spawned when its transport closes, and
    # the relay must outlive this server.
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "relay.log").open("ab") as relay_log:
        return subprocess.Popen(
            command,
            cwd=folder,  # not the script's folder: nothing there shadows our modules
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=relay_log,
            start_new_session=True,  # its own session and group: it outlives this server
        )


async def _until_exited(live: _Live) -> None:
    """Wait until the relay has exited (a pidfd where Linux has one; else a poll), and reap it
    when it is this server's child."""
    try:
        fd = os.pidfd_open(live.pid)
    except ProcessLookupError:
        fd = None
    except (AttributeError, OSError):  # no pidfd here: look now and then
        # Nothing notifies us of a process that is not our child: poll.
        while live.same_process() and (live.popen is None or live.popen.poll() is None):  # noqa: ASYNC110
            await anyio.sleep(_POLL_S)
        fd = None
    if fd is not None:
        try:
            if live.same_process():  # checked after the open: the fd is this very process
                await anyio.wait_readable(fd)
        finally:
            os.close(fd)
    if live.popen is not None:
        live.popen.wait()  # it has exited: this only reaps it
