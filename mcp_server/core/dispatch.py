"""GPU host bridges, seen from the server: dispatch, cancel, heartbeats, the watchdog, re-attach.

A run for a bridge is created here (backend `bridge`, with the bridge's URL), then started there
with `POST /sessions`; from then on the bridge pushes its metrics, final status and heartbeats to
the REST mirror, into the one ingestion path. This module only decides and reaches out:

- `choose_bridge` (pure): a bridge that has a GPU for device "cuda", any bridge that answers
  otherwise (GPU ones first, then the least busy), or an error naming why each one was passed over.
- The watchdog: a running bridge run whose heartbeats stop for `heartbeat_timeout_s` is marked
  `failed` with `bridge lost`. After a server restart the clock starts again from the restart, and
  each bridge run is first re-attached by asking its bridge, never marked interrupted blindly.

Status changes a bridge does not send itself are recorded here from its answers: `running` (with
the device) when the bridge accepts the session, `cancelled` once a cancelled session has flushed
every point. Completed and failed come from the bridge, after its final flush.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import SecretStr

from host_bridge.client import REQUEST_TIMEOUT_S, BridgeCallError, BridgeClient
from host_bridge.protocol import BridgeHealth, ScriptRun, SessionInfo, SessionRequest, StartFrom
from host_bridge.script_logs import LOGS_KEPT
from mcp_server.config import BridgeTarget, ServerConfig
from mcp_server.core.entry_points import EntryPoint, check_runs_elsewhere, epochs_total, resolve
from mcp_server.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
    UnavailableError,
    translate,
)
from mcp_server.core.ingest import Ingestor
from mcp_server.core.logs import LogsQuery, OperationLogs
from storage import (
    Backend,
    Database,
    Operation,
    OperationNotFoundError,
    OperationStatus,
    create_operation,
    get_operation,
    issue_push_credential,
    list_operations,
    new_operation_id,
    record_heartbeat,
)
from trainer.retention import CheckpointIndex
from trainer.spec import TrainingSpec

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BRIDGE_LOST",
    "BridgeDispatcher",
    "BridgeState",
    "choose_bridge",
    "open_bridges",
]

log = logging.getLogger(__name__)

BRIDGE_LOST = "bridge lost"
CANCEL_WAIT_S = 10.0
_ACTIVE = (OperationStatus.RUNNING, OperationStatus.QUEUED)


def _refusal(exc: BridgeCallError, url: str) -> ServiceError:
    """What the caller of `start_training` is told when a bridge did not start the run."""
    if exc.status_code == 422:
        return InvalidInputError(
            f"the bridge at {url} refused the run: {exc.message}", field=exc.field or "spec"
        )
    if exc.status_code == 401:
        return UnavailableError(
            f"the bridge at {url} refused this server's token; give the bridge's token as "
            "--bridge URL#TOKEN",
            field="backend",
        )
    return UnavailableError(
        f"the bridge at {url} did not start the run: {exc.message}", field="backend"
    )


@dataclass(frozen=True)
class BridgeState:
    """One bridge as a probe found it: its health, or why it could not be used."""

    target: BridgeTarget
    health: BridgeHealth | None = None
    problem: str | None = None


def choose_bridge(device: str, states: Sequence[BridgeState]) -> BridgeTarget:
    """The bridge to train on: one with a GPU for "cuda" (Apple's for "mps"), any for "cpu" or
    "auto" (GPU ones first), never a full one; then the least busy, then the first configured.
    Raises `UnavailableError` naming why each bridge was passed over."""
    if not states:
        field = "device" if device == "cuda" else "backend"
        raise UnavailableError(
            f"{field}: no GPU host bridge is configured; start the server with "
            "--bridge URL#TOKEN, or pass backend='local' if this machine has a GPU",
            field=field,
        )
    passed_over: list[str] = []
    fit: list[tuple[int, int, int, BridgeTarget]] = []
    for order, state in enumerate(states):
        health = state.health
        url = state.target.url
        if health is None:
            passed_over.append(f"{url}: {state.problem or 'unreachable'}")
        elif device == "cuda" and not health.has_gpu:
            passed_over.append(f"{url}: no CUDA GPU (torch {health.torch_version})")
        elif device == "mps" and not health.mps_available:
            passed_over.append(f"{url}: no Apple GPU (mps)")
        elif health.sessions_running >= health.max_sessions:
            passed_over.append(f"{url}: full ({health.sessions_running} runs training)")
        else:
            gpu_first = 0 if health.has_gpu else 1
            fit.append((gpu_first, health.sessions_running, order, state.target))
    if not fit:
        wanted = "bridge with a CUDA GPU" if device == "cuda" else "bridge"
        raise UnavailableError(
            f"device: no {wanted} is available: " + "; ".join(passed_over), field="device"
        )
    return min(fit, key=lambda f: f[:3])[3]


class BridgeDispatcher:
    """The server's side of every bridge. Lives as long as the service (see `open_bridges`)."""

    def __init__(
        self,
        config: ServerConfig,
        db: Database,
        ingestor: Ingestor,
        http: Callable[[], httpx.AsyncClient],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._db = db
        self._ingestor = ingestor
        self._http = http
        self._seen: dict[str, float] = {}  # operation -> monotonic time of its last sign of life
        self._stop = anyio.Event()
        self.timeout_s = config.heartbeat_timeout_s

    @property
    def heartbeat_interval_s(self) -> float:
        """What bridges are told: four beats per timeout, between 0.1 and 10 s."""
        return max(0.1, min(10.0, self.timeout_s / 4))

    def client_for(self, target: BridgeTarget) -> BridgeClient:
        token = target.token.reveal() if target.token else None
        return BridgeClient(self._http(), target.url, token)

    # -- dispatch -----------------------------------------------------------------------------

    async def probe(self) -> list[BridgeState]:
        """Every configured bridge's health, asked concurrently (at most HEALTH_TIMEOUT_S)."""
        states: list[BridgeState] = [BridgeState(t) for t in self.config.bridges]

        async def ask(i: int) -> None:
            target = self.config.bridges[i]
            try:
                health = await self.client_for(target).health()
            except BridgeCallError as exc:
                states[i] = BridgeState(target, problem=exc.message)
                return
            if health.token_accepted is False:
                states[i] = BridgeState(
                    target, problem="refuses this server's token (give it as --bridge URL#TOKEN)"
                )
            else:
                states[i] = BridgeState(target, health=health)

        async with anyio.create_task_group() as tg:
            for i in range(len(states)):
                tg.start_soon(ask, i)
        return states

    async def dispatch(
        self, spec: TrainingSpec, *, name: str, tags: Mapping[str, str] | None = None
    ) -> Operation:
        """Create the run and start it on the best bridge; it is `running` once accepted."""
        self._require_url()
        target = choose_bridge(spec.device, await self.probe())
        op = await create_operation(
            self._db,
            name=name,
            backend=Backend.BRIDGE,
            spec=spec.model_dump(mode="json"),
            epochs_total=spec.epochs,
            tags=tags,
            bridge_url=target.url,
        )
        await self._ingestor.announce(op)
        return await self.start_session(op, spec)

    async def dispatch_script(
        self,
        entry: EntryPoint,
        params: Mapping[str, Any] | None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Operation:
        """Run a declared entry point on the best bridge (a GPU one first): its parameters are
        checked here, then again by the bridge against its own copy of the file. The script
        pushes its own metrics; the session heartbeats and reports its end."""
        check_runs_elsewhere(entry)
        self._require_url()
        operation_id = new_operation_id()
        _argv, values = resolve(entry, params, operation_id, self.config.allowed_data_roots)
        target = choose_bridge("auto", await self.probe())
        op = await create_operation(
            self._db,
            name=name or entry.name,
            backend=Backend.BRIDGE,
            spec={"entry_point": entry.name, "params": values},
            epochs_total=epochs_total(values),
            tags=tags,
            bridge_url=target.url,
            operation_id=operation_id,
        )
        await self._ingestor.announce(op)
        return await self.start_session(
            op, None, script=ScriptRun(entry_point=entry.name, params=values)
        )

    def _require_url(self) -> None:
        if not self.config.public_url and self.config.bridges:
            raise UnavailableError(
                "backend: bridges push metrics to this server over HTTP, but it has no URL "
                "for them; serve with --http (and --public-url if bridges reach it by another "
                "name)",
                field="backend",
            )

    async def start_session(
        self,
        op: Operation,
        spec: TrainingSpec | None,
        start_from: StartFrom | None = None,
        *,
        script: ScriptRun | None = None,
    ) -> Operation:
        """Start `op` (a run created for a bridge) on its bridge, from a checkpoint the bridge
        holds if `start_from` says (fork, resume); it is `running` once accepted, `failed` with
        the refusal (raised) if not. Each start gets a new push credential."""
        target = self._require_target(op)
        token = self.config.token.reveal() if self.config.token else None
        push = await issue_push_credential(self._db, op.operation_id)  # only this session pushes
        request = SessionRequest(
            operation_id=op.operation_id,
            spec=spec,
            script=script,
            server_url=str(self.config.public_url),
            server_token=SecretStr(token) if token else None,
            heartbeat_interval_s=self.heartbeat_interval_s,
            push_token=SecretStr(push),
            start_from=start_from,
        )
        try:
            info = await self.client_for(target).start(request)
        except BridgeCallError as exc:
            error = _refusal(exc, target.url)
            await self._ingestor.record_status(
                op.operation_id, OperationStatus.FAILED, error=error.message
            )
            raise error from exc
        self._seen[op.operation_id] = self._clock()
        log.info("run %s started on %s (%s)", op.operation_id, target.url, info.device)
        return await self._ingestor.record_status(
            op.operation_id, OperationStatus.RUNNING, device=info.device
        )

    async def checkpoints(self, op: Operation) -> CheckpointIndex:
        """The checkpoints a bridge run's bridge holds for it."""
        target = self._require_target(op)
        try:
            found = await self.client_for(target).checkpoints(op.operation_id)
        except BridgeCallError as exc:
            raise UnavailableError(
                f"operation_id: the bridge at {target.url} did not say which checkpoints it "
                f"holds: {exc.message}",
                field="operation_id",
            ) from exc
        return CheckpointIndex() if found is None else found.index()

    async def logs(self, op: Operation, query: LogsQuery) -> OperationLogs:
        """A bridge script run's stdout or stderr, as its bridge keeps them."""
        target = self._require_target(op)
        try:
            found = await self.client_for(target).logs(op.operation_id, query)
        except BridgeCallError as exc:
            raise UnavailableError(
                f"operation_id: the bridge at {target.url} did not give the run's logs: "
                f"{exc.message}",
                field="operation_id",
            ) from exc
        if found is None:
            raise NotFoundError(
                f"operation_id: the bridge at {target.url} keeps no logs of "
                f"{op.operation_id!r} (by default it keeps its newest {LOGS_KEPT} scripts')",
                field="operation_id",
            )
        return found

    def _require_target(self, op: Operation) -> BridgeTarget:
        target = self._target(op)
        if target is None:
            raise UnavailableError(
                f"operation_id: its bridge {op.bridge_url} is no longer configured (--bridge)",
                field="operation_id",
            )
        return target

    # -- cancel -------------------------------------------------------------------------------

    async def stop(self, op: Operation, reason: str) -> Operation:
        """Cancel on the bridge, wait (at most CANCEL_WAIT_S) until it has flushed every point of
        the cancelled run, then record it cancelled. An unreachable bridge is cancelled here all
        the same; its next heartbeat is refused, and that stops it."""
        target = self._target(op)
        client = None if target is None else self.client_for(target)
        info: SessionInfo | None = None
        note = ""
        if client is not None:
            try:
                info = await client.cancel(op.operation_id, reason)
            except BridgeCallError as exc:
                note = f" (the bridge could not be told: {exc.message})"
        with anyio.move_on_after(CANCEL_WAIT_S):
            while client is not None and info is not None:
                current = await get_operation(self._db, op.operation_id)
                if current.finished:  # it completed or failed before the cancel arrived
                    return current
                if info.status == "cancelled" and info.points_pending == 0:
                    break
                if info.finished and info.delivered:
                    break
                await anyio.sleep(0.05)  # polling the bridge: its flush is not observable here
                try:
                    info = await client.session(op.operation_id)
                except BridgeCallError:
                    break
        return await self._finish(op.operation_id, OperationStatus.CANCELLED, reason=reason + note)

    async def _finish(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        reason: str | None = None,
        error: str | None = None,
    ) -> Operation:
        self._seen.pop(operation_id, None)
        return await self._ingestor.record_end(operation_id, status, reason=reason, error=error)

    # -- heartbeats, the watchdog, re-attach --------------------------------------------------

    async def heartbeat(self, operation_id: str) -> Operation:
        """A bridge (or an external run) says the run is alive. Refused with a conflict once the
        run has ended here: that tells the bridge to stop training."""
        try:
            op = await get_operation(self._db, operation_id)
        except OperationNotFoundError as exc:
            raise translate(exc) from exc
        if op.backend is Backend.LOCAL:
            raise ConflictError(
                "operation_id: a run trained by this server needs no heartbeat",
                field="operation_id",
            )
        if op.finished:
            raise ConflictError(
                f"operation_id: operation {operation_id!r} is already {op.status.value}; "
                "stop training it",
                field="operation_id",
            )
        self._seen[operation_id] = self._clock()
        await record_heartbeat(self._db, operation_id)
        return op

    async def check_heartbeats(self) -> list[str]:
        """Fail every active bridge run silent for longer than the timeout; returns their ids."""
        now = self._clock()
        lost: list[str] = []
        for op in await self._active():
            last = self._seen.setdefault(op.operation_id, now)
            silent = now - last
            if silent > self.timeout_s:
                await self._finish(
                    op.operation_id,
                    OperationStatus.FAILED,
                    error=f"{BRIDGE_LOST}: no heartbeat from {op.bridge_url} for "
                    f"{silent:.1f} s (timeout {self.timeout_s:g} s)",
                    reason=BRIDGE_LOST,
                )
                log.warning("run %s: %s (%s)", op.operation_id, BRIDGE_LOST, op.bridge_url)
                lost.append(op.operation_id)
        return lost

    async def reattach(self) -> int:
        """After a restart: ask each active bridge run's bridge how it is. Running, or still
        delivering: re-attached (its heartbeat clock starts now). Unknown there, or its bridge no
        longer configured: failed, bridge lost. Ended and delivered: that end is recorded."""
        attached = 0
        for op in await self._active():
            target = self._target(op)
            self._seen[op.operation_id] = self._clock()
            if target is None:
                await self._lost(op, f"{op.bridge_url} is no longer configured (--bridge)")
                continue
            try:
                info = await self.client_for(target).session(op.operation_id)
            except BridgeCallError as exc:
                log.warning(
                    "run %s: its bridge did not answer (%s); waiting for a heartbeat",
                    op.operation_id,
                    exc.message,
                )
                continue
            if info is None:
                await self._lost(op, f"the bridge at {target.url} has no record of this run")
            elif info.status == "cancelled" and info.points_pending == 0:
                await self._finish(op.operation_id, OperationStatus.CANCELLED, reason=info.reason)
            elif info.finished and info.delivered:
                await self._finish(
                    op.operation_id,
                    OperationStatus(info.status),
                    error=info.error,
                    reason=info.reason,
                )
            else:
                attached += 1
        if attached:
            log.info("re-attached %d bridge runs", attached)
        return attached

    async def watch(self, revive: Callable[[], Awaitable[object]] | None = None) -> None:
        """Re-attach, then check heartbeats every quarter timeout (at most every second), until
        `stop_watching`; and call `revive` (resuming runs their bridge's loss ended) about every
        heartbeat interval. Stopping waits for a check in progress instead of cancelling it: a
        database call cancelled half-way leaks its connection."""
        await self.reattach()
        tick = min(1.0, self.timeout_s / 4)
        revived_at = -math.inf
        while not self._stop.is_set():
            with anyio.move_on_after(tick):
                await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.check_heartbeats()
                if revive is not None and self._clock() - revived_at >= self.heartbeat_interval_s:
                    revived_at = self._clock()
                    await revive()
            except Exception:  # the watchdog outlives one bad check (a busy database)
                log.exception("bridge watchdog check failed")

    async def ready_to_resume(self, op: Operation) -> bool:
        """Whether `op`'s bridge answers and holds nothing of it still to deliver: a resume
        then starts there (one sent while it delivers would be refused)."""
        target = self._target(op)
        if target is None:
            return False
        try:
            session = await self.client_for(target).session(op.operation_id)
        except BridgeCallError:
            return False
        return session is None or (session.status != "running" and session.delivered)

    def stop_watching(self) -> None:
        self._stop.set()

    async def _lost(self, op: Operation, why: str) -> None:
        await self._finish(
            op.operation_id,
            OperationStatus.FAILED,
            error=f"{BRIDGE_LOST}: {why}",
            reason=BRIDGE_LOST,
        )

    async def _active(self) -> list[Operation]:
        ops: list[Operation] = []
        for status in _ACTIVE:
            ops += await list_operations(
                self._db, status=status, backend=Backend.BRIDGE, limit=10_000
            )
        return ops

    def _target(self, op: Operation) -> BridgeTarget | None:
        return next((t for t in self.config.bridges if t.url == op.bridge_url), None)


@asynccontextmanager
async def open_bridges(
    config: ServerConfig,
    db: Database,
    ingestor: Ingestor,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[BridgeDispatcher]:
    """The dispatcher and its HTTP client, for as long as the service runs. `transport` and
    `clock` are seams for tests (a scripted bridge, a clock they move)."""
    if not math.isfinite(config.heartbeat_timeout_s) or config.heartbeat_timeout_s <= 0:
        raise ValueError(
            f"heartbeat_timeout_s: must be a positive number, got {config.heartbeat_timeout_s}"
        )
    http = _SharedHttp(transport)
    try:
        dispatcher = BridgeDispatcher(config, db, ingestor, http, clock)
        try:
            yield dispatcher
        finally:
            dispatcher.stop_watching()
    finally:
        await http.aclose()


class _SharedHttp:
    """The bridges' one HTTP client, made on its first use: httpx's import and its TLS context
    were ~0.1 s of every start, and a server without bridges never calls one."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __call__(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(transport=self._transport, timeout=REQUEST_TIMEOUT_S)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
