"""Sessions: each trains one spec in a worker thread and pushes everything it emits to the server.

    POST /sessions -> SessionManager.start -> a thread: run_training(spec, sink) -> final status
                                               |-> the sink: MetricsReporter over the spool
                                               |-> a heartbeat thread, until the server has it all
                                               |-> a system-metrics thread, while it trains

The training thread only appends to the spool (a local SQLite write); the session's
`MetricsReporter` sends from there in batches, with retries, and a point leaves the spool once the
server has answered for it. When training ends the session keeps trying, with backoff, until every
point and then the final status have reached the server (the final flush comes first), and it
heartbeats all the while, so the server knows a bridge that is still delivering from one that is
gone. A heartbeat the server refuses (the run ended there: cancelled, or declared lost) stops the
training here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from host_bridge.entry_points import EntryPoint, ParameterError
from host_bridge.protocol import (
    RESTART_ERROR,
    SHUTDOWN_ERROR,
    CheckpointList,
    SessionInfo,
    SessionList,
    SessionRequest,
    SessionStatus,
)
from host_bridge.rotating_log import LOG_BYTES, LOG_FILES
from host_bridge.script_logs import LOGS_KEPT, LogsQuery, OperationLogs, read_log
from host_bridge.scripts import ScriptProcess, script_end, script_environment
from host_bridge.spool import Spool
from httpbase.guard import server_url_allowed
from trainer.budget import ResourceLimits
from trainer.checkpoint_budget import CheckpointBudget, prune_run, prune_total
from trainer.errors import TrainerError
from trainer.preflight import TrainerOptions, check_spec
from trainer.records import EpochRecord, RunResult, StepRecord
from trainer.retention import epoch_file, protected_names, read_index
from training_mcp import MetricsReporter, ReportError, RetryPolicy
from training_mcp.points import epoch_points, step_points
from training_mcp.system import (
    DEFAULT_INTERVAL_S,
    GpuReader,
    SystemMonitor,
    SystemSampler,
    nvml_reader,
)

__all__ = ["BridgeOptions", "SessionError", "SessionManager"]

log = logging.getLogger(__name__)

STEP_HOLD_S = 1.0  # per-step losses of a long epoch go about this often


@dataclass(frozen=True)
class BridgeOptions:
    """The bridge's own settings (a request cannot change them).

    `retry` is per request; between rounds of retries a session waits up to `max_pause_s`
    (exponential, full jitter) and then tries again, for as long as the bridge runs.
    """

    data_dir: Path
    max_sessions: int = 2
    data_roots: tuple[Path, ...] = ()
    allow_factory: bool = False
    allowed_servers: tuple[str, ...] = ()  # empty: servers on loopback only
    limits: ResourceLimits | None = None  # a session's budget; None: checks none
    checkpoints: CheckpointBudget = field(default_factory=CheckpointBudget)
    timeout_s: float = 5.0
    max_batch: int = 1000
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=5, base_delay_s=0.1, max_delay_s=2.0)
    )
    max_pause_s: float = 5.0
    system_interval_s: float = DEFAULT_INTERVAL_S  # system/... metrics of sessions; 0: none
    system_gpu: GpuReader | Literal["nvml"] | None = "nvml"  # GPU readings (tests: fixed ones)
    entry_points: Mapping[str, EntryPoint] = field(default_factory=dict)  # --entry-points
    script_grace_s: float = 5.0  # a stopped script: SIGINT, SIGTERM, SIGKILL this far apart
    log_bytes: int = LOG_BYTES  # a script's logs: bytes per file, files kept per stream
    log_files: int = LOG_FILES
    logs_kept: int = LOGS_KEPT  # scripts' log folders kept, newest first

    def __post_init__(self) -> None:
        if not 1 <= self.max_sessions <= 1000:
            raise ValueError(f"max_sessions: must be between 1 and 1000, got {self.max_sessions}")
        if not 0 < self.timeout_s <= 600:
            raise ValueError(
                f"timeout_s: must be more than 0 and at most 600, got {self.timeout_s}"
            )
        if not 0 <= self.max_pause_s <= 3600:
            raise ValueError(f"max_pause_s: must be between 0 and 3600, got {self.max_pause_s}")
        if not 0 <= self.system_interval_s <= 3600:
            raise ValueError(
                f"system_interval_s: must be between 0 (none) and 3600, got "
                f"{self.system_interval_s}"
            )


class SessionError(Exception):
    """A request the bridge refuses: `code` and `http_status` for the answer, `field` if any."""

    def __init__(self, code: str, http_status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.message = message
        self.field = field


class _Sink:
    """What the training thread writes to: the reporter's queue (the spool), and the progress.

    Per-step losses wait in memory and go with their epoch, so an epoch is one spool write and
    one request, never queued behind a request of step losses; in an epoch longer than
    `STEP_HOLD_S` they go about that often. (A bridge killed mid-epoch loses that epoch's held
    steps with the epoch itself.)
    """

    def __init__(self, reporter: MetricsReporter, spool: Spool, operation_id: str) -> None:
        self._reporter = reporter
        self._spool = spool
        self._operation_id = operation_id
        self._steps: list[StepRecord] = []
        self.epoch: int | None = None  # the last epoch finished, for the system samples

    def on_epoch(self, record: EpochRecord) -> None:
        self.epoch = record.epoch
        steps, self._steps = self._steps, []
        # The epoch and the step losses logged during it, queued together (one request).
        self._reporter.put([*step_points(steps), *epoch_points(record)])
        self._spool.update(self._operation_id, epochs_done=record.epoch)

    def on_step(self, record: StepRecord) -> None:
        self._steps.append(record)
        if record.timestamp - self._steps[0].timestamp >= STEP_HOLD_S:
            self.flush_steps()

    def flush_steps(self) -> None:
        """Queue the held steps (at the end of a run that stopped mid-epoch)."""
        steps, self._steps = self._steps, []
        if steps:
            self._reporter.put(step_points(steps))


@dataclass
class _Live:
    """A session this process is working on: training, or delivering what is left."""

    request: SessionRequest
    reporter: MetricsReporter
    training: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # everything delivered
    cancel_reason: str | None = None
    threads: list[threading.Thread] = field(default_factory=list)


class SessionManager:
    """Every session of this bridge: starts, reads, cancels, and resumes deliveries on start-up."""

    def __init__(
        self,
        options: BridgeOptions,
        spool: Spool | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport`: how sessions reach servers (default the network; tests pass a mock)."""
        self.options = options
        self.spool = spool or Spool.in_dir(options.data_dir)
        self._transport = transport
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._stopping = threading.Event()
        self._rng = random.Random()
        self._gpu: GpuReader | None = None
        self._gpu_opened = False

    @property
    def running(self) -> int:
        with self._lock:
            return sum(1 for s in self._live.values() if s.training)

    # -- the routes' side ---------------------------------------------------------------------

    def start(self, request: SessionRequest) -> tuple[SessionInfo, bool]:
        """Start training `request.spec`; (info, True). A request for a session that exists
        returns it unchanged with False, so a retried POST never trains twice."""
        if not server_url_allowed(request.server_url, self.options.allowed_servers):
            allowed = ", ".join(self.options.allowed_servers) or "servers on loopback"
            raise SessionError(
                "forbidden",
                403,
                f"server_url: this bridge pushes only to {allowed}; the operator can add a "
                "server with --allowed-server",
                "server_url",
            )
        existing = self.spool.get(request.operation_id)
        if existing is not None and not self._restarts(existing, request):
            return existing, False
        self._start_path(request)
        if request.spec is None:
            self._script_argv(request)  # refused here, before anything is recorded
            device = None
        else:
            try:
                check_spec(request.spec, self._trainer_options())
                device = _resolve_device(request.spec.device)
            except TrainerError as exc:
                raise SessionError(
                    "invalid_input",
                    422,
                    str(exc),
                    f"spec.{getattr(exc, 'field', '')}".rstrip("."),
                ) from exc
        with self._lock:
            if self._stopping.is_set():
                raise SessionError("busy", 503, "the bridge is shutting down")
            if sum(1 for s in self._live.values() if s.training) >= self.options.max_sessions:
                raise SessionError(
                    "busy",
                    503,
                    f"this bridge trains at most {self.options.max_sessions} runs at once and "
                    "is full; try another bridge or later",
                )
            if existing is not None:  # a resume: the ended session trains again, same id
                if request.operation_id in self._live:
                    raise SessionError(
                        "conflict",
                        409,
                        f"operation_id: session {request.operation_id!r} is still delivering "
                        "its end to the server; resume it again shortly",
                        "operation_id",
                    )
                info = self.spool.restart(request, device=device)
                live = self._track(request, training=True)
                self._spawn(live, self._train, name=f"train-{request.operation_id}")
                log.info("session %s: resumed on %s", request.operation_id, device)
                return info, True
            try:
                info = self.spool.create(request, device=device)
            except sqlite3.IntegrityError:
                found = self.spool.get(request.operation_id)
                assert found is not None
                return found, False
            live = self._track(request, training=True)
        self._spawn(live, self._train, name=f"train-{request.operation_id}")
        log.info("session %s: training on %s", request.operation_id, device)
        return info, True

    def _restarts(self, existing: SessionInfo, request: SessionRequest) -> bool:
        """Whether a request for an existing session resumes it: it starts from the session's
        own checkpoint, and is not the request that session already runs (a retried POST, which
        carries the same push credential)."""
        start = request.start_from
        if start is None or start.operation_id != request.operation_id:
            return False
        if self.spool.request(request.operation_id).push_token == request.push_token:
            return False
        if not existing.finished:
            raise SessionError(
                "conflict",
                409,
                f"operation_id: session {request.operation_id!r} is still training here; "
                "cancel it before resuming it",
                "operation_id",
            )
        return True

    def _start_path(self, request: SessionRequest) -> Path | None:
        """The checkpoint file `start_from` names, or a refusal naming the ones that exist."""
        start = request.start_from
        if start is None:
            return None
        folder = self._artifacts(start.operation_id)
        path = folder / epoch_file(start.epoch)
        if not path.is_file():
            raise SessionError(
                "invalid_input",
                422,
                f"start_from.epoch: session {start.operation_id!r} has no checkpoint of epoch "
                f"{start.epoch} on this bridge; checkpoints exist for epochs "
                f"{self.checkpoints(start.operation_id, known=False).index().describe()}",
                "start_from.epoch",
            )
        return path

    def checkpoints(self, operation_id: str, *, known: bool = True) -> CheckpointList:
        """The checkpoints the session's folder holds (a file for each epoch listed)."""
        if known:
            self.get(operation_id)  # 404 for a session this bridge never had
        folder = self._artifacts(operation_id)
        index = read_index(folder)
        epochs = [e for e in index.epochs if (folder / epoch_file(e)).is_file()]
        return CheckpointList(
            operation_id=operation_id,
            epochs=epochs,
            best=index.best if index.best in epochs else None,
            last=index.last if index.last in epochs else None,
        )

    def logs(self, operation_id: str, query: LogsQuery) -> OperationLogs:
        """A script session's stdout or stderr: the last `tail` lines, or what came after
        `cursor` (the same answer as a server's script run)."""
        self.get(operation_id)  # 404 for a session this bridge never had
        if self.spool.request(operation_id).script is None:
            raise SessionError(
                "not_found",
                404,
                f"session {operation_id!r} runs the built-in trainer: only scripts have logs",
                "operation_id",
            )
        folder = self._logs(operation_id)
        if not folder.is_dir():
            raise SessionError(
                "not_found",
                404,
                f"no logs of {operation_id!r} are kept on this bridge (it keeps its newest "
                f"{self.options.logs_kept} scripts')",
                "operation_id",
            )
        return read_log(folder, operation_id, query.stream, tail=query.tail, cursor=query.cursor)

    def _artifacts(self, operation_id: str) -> Path:
        return self.options.data_dir / "artifacts" / operation_id

    def _logs(self, operation_id: str) -> Path:
        return self.options.data_dir / "logs" / operation_id

    def get(self, operation_id: str) -> SessionInfo:
        info = self.spool.get(operation_id)
        if info is None:
            raise SessionError(
                "not_found", 404, f"no session {operation_id!r} on this bridge", "operation_id"
            )
        return info

    def list_sessions(self) -> SessionList:
        return SessionList(sessions=self.spool.sessions())

    def cancel(self, operation_id: str, reason: str | None = None) -> tuple[SessionInfo, bool]:
        """Stop a session's training within one batch; (info, True) when it was training."""
        info = self.get(operation_id)
        with self._lock:
            live = self._live.get(operation_id)
            training = live is not None and live.training and not live.cancel.is_set()
            if training and live is not None:
                live.cancel_reason = reason or "cancelled by the server"
                live.cancel.set()
        if training:
            self.spool.update(operation_id, cancel_requested=1)
            info = self.get(operation_id)
        return info, training

    def wait(self, operation_id: str, timeout_s: float | None = None) -> SessionInfo | None:
        """The session once this process is done with it (trained and delivered, or given up
        and left in the spool), or None if it is still working after `timeout_s`."""
        with self._lock:
            live = self._live.get(operation_id)
        if live is not None and not live.done.wait(timeout_s):
            return None
        return self.get(operation_id)

    # -- start-up and shutdown ----------------------------------------------------------------

    def resume(self) -> int:
        """Deliver what an earlier process of this bridge left in the spool. A session that was
        training when it died has failed; the server learns so, after its spooled points."""
        count = 0
        for info in self.spool.undelivered():
            if info.status == "running":
                self.spool.finish(info.operation_id, "failed", error=RESTART_ERROR)
            request = self.spool.request(info.operation_id)
            with self._lock:
                if info.operation_id in self._live:
                    continue
                live = self._track(request, training=False)
            self._spawn(live, self._deliver_only, name=f"deliver-{info.operation_id}")
            count += 1
        return count

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop: running sessions end as failed (shutdown), each delivery gets one last try, and
        whatever is still unsent stays in the spool for the next start."""
        self._stopping.set()
        with self._lock:
            lives = list(self._live.values())
        for live in lives:
            if live.training:
                live.cancel.set()
        per_thread = timeout_s / max(1, sum(len(live.threads) for live in lives))
        for live in lives:
            for thread in live.threads:
                thread.join(per_thread)
        self.spool.close()

    # -- the threads --------------------------------------------------------------------------

    def _track(self, request: SessionRequest, *, training: bool) -> _Live:
        token = request.server_token.get_secret_value() if request.server_token else None
        push = request.push_token.get_secret_value() if request.push_token else None
        reporter = MetricsReporter(
            request.server_url,
            request.operation_id,
            token=token,
            push_token=push,
            max_batch=self.options.max_batch,
            timeout_s=self.options.timeout_s,
            retry=self.options.retry,
            queue=self.spool.queue(request.operation_id),
            transport=self._transport,
        )
        live = _Live(request=request, reporter=reporter, training=training)
        self._live[request.operation_id] = live
        return live

    def _spawn(self, live: _Live, target: Callable[[_Live], None], name: str) -> None:
        for fn, label in ((target, name), (self._heartbeat, f"heartbeat-{name}")):
            thread = threading.Thread(target=fn, args=(live,), name=label, daemon=True)
            live.threads.append(thread)
            thread.start()

    def _train(self, live: _Live) -> None:
        operation_id = live.request.operation_id
        try:
            status, error, reason, device = self._run(live)
            self.spool.finish(operation_id, status, error=error, reason=reason, device=device)
            with self._lock:
                live.training = False
            log.info("session %s: %s", operation_id, status)
            self._deliver(live)
        finally:
            self._release(live)

    def _run(self, live: _Live) -> tuple[SessionStatus, str | None, str | None, str | None]:
        from trainer.loop import run_training  # imports torch

        request = live.request
        if request.spec is None:
            try:
                return (*self._run_script(live), None)
            except SessionError as exc:  # the bridge's file changed since the request came
                return "failed", exc.message, None, None
            except Exception as exc:  # the top of a session: the server must learn how it ended
                log.exception("session %s raised", request.operation_id)
                return "failed", f"internal error on the bridge: {exc!r}", None, None
        options = self._trainer_options(self._artifacts(request.operation_id))
        sink = _Sink(live.reporter, self.spool, request.operation_id)
        self.spool.update(request.operation_id, started_at=time.time())
        try:
            start = self._start_path(request)
            with self._system_monitor(live, lambda: sink.epoch):
                result = run_training(
                    request.spec, sink, cancel=live.cancel, options=options, start_from=start
                )
        except SessionError as exc:  # its checkpoint was pruned since the request came
            return "failed", exc.message, None, None
        except TrainerError as exc:
            return "failed", str(exc), None, None
        except Exception as exc:  # the top of a session: the server must learn how it ended
            log.exception("session %s raised", request.operation_id)
            return "failed", f"internal error on the bridge: {exc!r}", None, None
        finally:
            sink.flush_steps()
            self._prune(request.operation_id)
        return (*self._outcome(result, live), result.device)

    def _script_argv(self, request: SessionRequest) -> tuple[EntryPoint, list[str]]:
        """The entry point `request.script` names, checked against this bridge's own file, and
        its argv; a refusal names the entry point or the parameter."""
        script = request.script
        assert script is not None
        declared = self.options.entry_points
        entry = declared.get(script.entry_point)
        if entry is None:
            names = ", ".join(sorted(declared)) or "none (start the bridge with --entry-points)"
            raise SessionError(
                "invalid_input",
                422,
                f"entry_point: {script.entry_point!r} is not declared on this bridge; "
                f"declared: {names}",
                "entry_point",
            )
        try:
            argv, _values = entry.resolve(
                script.params, request.operation_id, self.options.data_roots
            )
        except ParameterError as exc:
            raise SessionError("invalid_input", 422, exc.message, exc.field) from exc
        return entry, argv

    def _run_script(self, live: _Live) -> tuple[SessionStatus, str | None, str | None]:
        """The declared command in its own process group; it pushes its own metrics to the
        server with the light client, this session heartbeats and reports how it ended."""
        request = live.request
        entry, argv = self._script_argv(request)
        push = request.push_token.get_secret_value() if request.push_token else ""
        token = request.server_token.get_secret_value() if request.server_token else None
        env = script_environment(
            os.environ,
            url=request.server_url,
            operation_id=request.operation_id,
            token=token,
            push_token=push,
        )
        self.spool.update(request.operation_id, started_at=time.time())
        folder = self._logs(request.operation_id)
        try:
            process = ScriptProcess(
                argv,
                entry.cwd,
                env,
                logs=folder,
                log_bytes=self.options.log_bytes,
                log_files=self.options.log_files,
            )
        except OSError as exc:
            return "failed", f"the command could not start: {exc.strerror or exc} ({argv[0]})", None
        log.info("session %s: script %s (pid %d)", request.operation_id, entry.name, process.pid)
        try:
            with self._system_monitor(live, lambda: None, pid=process.pid):
                grace_s = entry.grace_s(self.options.script_grace_s)
                returncode, stopped, tail = process.run(live.cancel, grace_s)
        finally:
            self._prune_logs(request.operation_id)
        if stopped and live.cancel_reason is None:  # the bridge is shutting down
            return "failed", SHUTDOWN_ERROR, None
        return script_end(returncode, live.cancel_reason if stopped else None, tail)

    def _system_monitor(
        self, live: _Live, epoch: Callable[[], int | None], pid: int | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """This process (or the script `pid` leads, with its session's processes) sampled while
        the session trains, the points spooled like the rest; one last sample when it ends."""
        interval = self.options.system_interval_s
        if interval <= 0:
            return contextlib.nullcontext()
        with self._lock:  # NVML opened once, by the first session
            if not self._gpu_opened:
                gpu = self.options.system_gpu
                self._gpu = nvml_reader() if isinstance(gpu, str) else gpu
                self._gpu_opened = True
        sampler = SystemSampler(pid, group=pid is not None, gpu=self._gpu)
        return SystemMonitor(sampler, live.reporter.put, interval, epoch=epoch)

    def _others_training(self, operation_id: str) -> set[str]:
        """The sessions still training besides `operation_id`: what pruning never touches."""
        with self._lock:
            return {k for k, s in self._live.items() if s.training and k != operation_id}

    def _prune_logs(self, operation_id: str) -> None:
        """Scripts' log folders past the newest `logs_kept`, never one still running."""
        root = self._logs(operation_id).parent
        active = self._others_training(operation_id)
        try:
            folders = sorted(
                (p for p in root.iterdir() if p.is_dir() and p.name not in active),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            for old in folders[self.options.logs_kept :]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            log.exception("pruning script logs after %s failed", operation_id)

    def _prune(self, operation_id: str) -> None:
        """The checkpoints' disk budget, once a session has trained: its own extra files, then
        whole sessions, oldest first, never one still training."""
        folder = self._artifacts(operation_id)  # the fork/resume points the loop keeps stay
        active = self._others_training(operation_id)
        try:
            prune_run(folder, self.options.checkpoints.per_run, keep=protected_names(folder))
            prune_total(folder.parent, self.options.checkpoints.total, active)
        except OSError:
            log.exception("pruning checkpoints after %s failed", operation_id)

    def _outcome(
        self, result: RunResult, live: _Live
    ) -> tuple[SessionStatus, str | None, str | None]:
        if result.outcome == "cancelled":
            if live.cancel_reason is None:  # the bridge is shutting down
                return "failed", SHUTDOWN_ERROR, result.reason
            return "cancelled", None, live.cancel_reason
        if result.outcome == "failed":
            return "failed", result.reason, None
        if result.outcome == "early_stopped":
            return "completed", None, f"early stop: {result.reason}"
        return "completed", None, result.reason

    def _deliver_only(self, live: _Live) -> None:
        try:
            self._deliver(live)
        finally:
            self._release(live)

    def _deliver(self, live: _Live) -> None:
        """Every spooled point, then the final status: retried with backoff until the server has
        them, the server refuses them for good, or the bridge stops (then they stay spooled)."""
        operation_id = live.request.operation_id
        info = self.spool.get(operation_id)
        assert info is not None and info.finished
        pause = 0
        while True:
            try:
                self._send_all(live, info)
                break
            except ReportError as exc:
                if not exc.transient:
                    if exc.status_code == 409:  # the run already ended there: nothing to add
                        log.warning("session %s: %s", operation_id, exc.message)
                        break
                    log.error("session %s: the server refused the status: %s", operation_id, exc)
                    return  # stays undelivered: a restart of the bridge tries again
                if self._stopping.is_set():
                    return
                wait = self._rng.uniform(0, min(self.options.max_pause_s, 0.25 * 2**pause))
                pause = min(pause + 1, 30)
                log.info(
                    "session %s: server unreachable (%s); again in %.1f s",
                    operation_id,
                    exc.message,
                    wait,
                )
                if self._stopping.wait(wait):
                    return
        self.spool.update(operation_id, delivered=1)

    def _send_all(self, live: _Live, info: SessionInfo) -> None:
        """The final flush, then the status. `cancelled` is not sent: the server cancelled the run
        itself and records it once it sees this session flushed (`points_pending` 0)."""
        try:
            live.reporter.flush()
        except ReportError as exc:
            if exc.transient:
                raise
            # Refused points are dropped by the reporter (sending them again cannot help, e.g.
            # the run already ended on the server); the status still goes.
            log.warning("session %s: the server refused points: %s", info.operation_id, exc)
        if info.status in ("completed", "failed"):
            # Re-reporting a status changes nothing, so it is retried like a batch.
            live.reporter.report_status(info.status, error=info.error, reason=info.reason)

    def _heartbeat(self, live: _Live) -> None:
        operation_id = live.request.operation_id
        interval = live.request.heartbeat_interval_s
        while not live.done.wait(interval):
            try:
                live.reporter.heartbeat()
            except ReportError as exc:
                if exc.status_code in (404, 409) and live.training and not live.cancel.is_set():
                    # The server ended the run (cancelled it, or declared this bridge lost):
                    # nobody wants what this training would produce.
                    log.warning(
                        "session %s: stopping, the server refused a heartbeat: %s",
                        operation_id,
                        exc.message,
                    )
                    live.cancel_reason = f"the server ended the run ({exc.message})"
                    live.cancel.set()
                else:
                    log.debug("session %s: heartbeat failed: %s", operation_id, exc)

    def _release(self, live: _Live) -> None:
        live.done.set()
        try:
            live.reporter.close(timeout_s=0.5)
        except ReportError as exc:
            log.warning("session %s: %s (kept in the spool)", live.request.operation_id, exc)
        with self._lock:
            self._live.pop(live.request.operation_id, None)

    def _trainer_options(self, artifact_dir: Path | None = None) -> TrainerOptions:
        return TrainerOptions(
            data_roots=self.options.data_roots,
            allow_factory=self.options.allow_factory,
            artifact_dir=artifact_dir,
            limits=self.options.limits,
            checkpoint_budget_bytes=self.options.checkpoints.per_run,
        )


def _resolve_device(name: str) -> str:
    from trainer.batches import resolve_device  # imports torch

    return str(resolve_device(name))
