"""Runs on a Ray cluster, seen from the server: submit, follow, cancel, re-attach, retry.

A Ray run is one detached, named actor (`host_bridge.ray_worker.RunActor`) holding the resources
the run asks for. The actor trains with the bridge's session code and pushes every epoch, its final
status and heartbeats to this server's REST mirror, into the one ingestion path; Ray itself only
places the actor, carries `stop_training` to it, and tells this module when its worker died. Per
run a follower task here walks the actor through `ready` (placed: the run is `running` on its
device), `start` and `wait`, each idempotent, so the same walk serves a new run, a retry and a run
re-attached after a server restart. A worker or node that dies fails the run with the reason
(`ray worker lost: ...`), or starts it again where the operator allowed retries (`--ray-retries`).

Each run gets its own push credential through the actor's arguments (a retry a fresh one, so a
dead attempt cannot push), so no other client can push into it. Ray runs hold a slot of the
server's `--max-concurrent-runs`, shared with local runs: past the limit a run stays `queued` here,
in order, and only gets an actor when a slot frees. An operator's declared entry point runs the
same way (`dispatch_script`): its checked argv inside a `ScriptActor`, its exit code its status.

What each actor is given is decided in `ray_actors.py` (pure). Ray is an optional extra imported
only here (and on the workers), only when `--ray` is given.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from host_bridge.protocol import SessionInfo
from mcp_server.config import ServerConfig
from mcp_server.core.entry_points import EntryPoint, check_runs_elsewhere, epochs_total, resolve
from mcp_server.core.errors import NotFoundError, UnavailableError
from mcp_server.core.ingest import Ingestor
from mcp_server.core.logs import LogsQuery, OperationLogs, read_log
from mcp_server.core.models import RunResources
from mcp_server.core.processes import script_outcome
from mcp_server.core.ray_actors import actor_args, actor_options, describe_death
from storage import (
    Backend,
    Database,
    IllegalTransitionError,
    Operation,
    OperationStatus,
    create_operation,
    get_operation,
    issue_push_credential,
    list_operations,
    new_operation_id,
)
from trainer.spec import TrainingSpec

__all__ = ["RAY_INSTALL", "RAY_LOST", "RayBackend", "open_ray", "ray_installed"]

log = logging.getLogger(__name__)

RAY_INSTALL = 'pip install "training-mcp[ray]"'
RAY_LOST = "ray worker lost"
WAIT_SLICE_S = 10.0  # one `wait` call on the actor; a restarted server's calls replace these
CANCEL_WAIT_S = 10.0
_ACTIVE = (OperationStatus.RUNNING, OperationStatus.QUEUED)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise UnavailableError(
            f"backend: Ray is not installed on this server; install it with {RAY_INSTALL} and "
            "serve with --ray auto (or --ray ADDRESS)",
            field="backend",
        ) from exc


@dataclass
class _Follow:
    """One run this server follows on the cluster."""

    actor: Any
    attempt: int
    options: Mapping[str, Any]
    done: anyio.Event = field(default_factory=anyio.Event)


class RayBackend:
    """The server's side of every Ray run. Lives as long as the service (see `open_ray`)."""

    def __init__(
        self,
        config: ServerConfig,
        db: Database,
        ingestor: Ingestor,
        tg: TaskGroup,
        heartbeat_interval_s: float,
        ray: Any,
        slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        """`slots`: the server's concurrency limit, shared with local runs; a Ray run holds one
        from its submission to its end (its borrower is its operation id)."""
        self.config = config
        self._db = db
        self._ingestor = ingestor
        self._tg = tg
        self._interval = heartbeat_interval_s
        self._ray = ray
        self._slots = slots or anyio.CapacityLimiter(config.max_concurrent_runs)
        self._holding: set[str] = set()  # runs holding a slot
        self._waiting: dict[str, anyio.CancelScope] = {}  # runs queued for one
        self._follows: dict[str, _Follow] = {}

    @property
    def configured(self) -> bool:
        return self._ray is not None

    # -- dispatch -----------------------------------------------------------------------------

    async def dispatch(
        self,
        spec: TrainingSpec,
        *,
        name: str,
        tags: Mapping[str, str] | None = None,
        resources: RunResources | None = None,
    ) -> Operation:
        """Create the run (`queued` until Ray has placed its actor) and submit it, or queue it
        for a slot of the concurrency limit."""
        self._require()
        options = actor_options(spec, resources)
        op = await create_operation(
            self._db,
            name=name,
            backend=Backend.RAY,
            spec=spec.model_dump(mode="json"),
            epochs_total=spec.epochs,
            tags=tags,
        )
        return await self._admit(op, options)

    async def dispatch_script(
        self,
        entry: EntryPoint,
        params: Mapping[str, Any] | None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        resources: RunResources | None = None,
    ) -> Operation:
        """A declared entry point as a Ray run: its parameters checked and substituted exactly
        as for a local script run (`EntryPoint.resolve`), its command run inside an actor with
        the resources asked for."""
        check_runs_elsewhere(entry)
        options = actor_options(None, resources)
        operation_id = new_operation_id()
        argv, values = resolve(entry, params, operation_id, self.config.allowed_data_roots)
        self._require()
        op = await create_operation(
            self._db,
            name=name or entry.name,
            backend=Backend.RAY,
            spec={
                "entry_point": entry.name,
                "params": values,
                "argv": argv,
                "cwd": entry.cwd,
                "stop_grace_s": entry.grace_s(self.config.script_grace_s),
            },
            epochs_total=epochs_total(values),
            tags=tags,
            operation_id=operation_id,
        )
        return await self._admit(op, options)

    async def _admit(self, op: Operation, options: Mapping[str, Any]) -> Operation:
        """Submit now if a slot is free (a refusal then reaches the caller), else queue."""
        await self._ingestor.announce(op)
        operation_id = op.operation_id
        try:
            self._slots.acquire_on_behalf_of_nowait(operation_id)
        except anyio.WouldBlock:
            self._tg.start_soon(self._queued, op, options)
            log.info("run %s queued for a slot (--max-concurrent-runs)", operation_id)
            return op
        self._holding.add(operation_id)
        try:
            follow = await self._submit(op, options, attempt=1)
        except Exception as exc:  # the cluster refused the actor: say why, keep the run's record
            self._free(operation_id)
            message = f"backend: the Ray cluster did not take the run: {describe_death(exc)}"
            await self._ingestor.record_status(operation_id, OperationStatus.FAILED, error=message)
            raise UnavailableError(message, field="backend") from exc
        self._follow(operation_id, follow)
        log.info("run %s submitted to Ray (%s)", operation_id, options)
        return op

    async def _queued(self, op: Operation, options: Mapping[str, Any]) -> None:
        """Wait (in order) for a slot, then submit; `stop` cancels the wait."""
        operation_id = op.operation_id
        with anyio.CancelScope() as scope:
            self._waiting[operation_id] = scope
            try:
                await self._slots.acquire_on_behalf_of(operation_id)
                self._holding.add(operation_id)
            finally:
                self._waiting.pop(operation_id, None)
        if scope.cancel_called:  # stopped while it waited (perhaps just as a slot came)
            self._free(operation_id)
            return
        try:
            follow = await self._submit(op, options, attempt=1)
        except Exception as exc:
            self._free(operation_id)
            await self._ingestor.record_end(
                operation_id,
                OperationStatus.FAILED,
                error=f"the Ray cluster did not take the run: {describe_death(exc)}",
            )
            return
        self._follow(operation_id, follow)
        log.info("run %s submitted to Ray (%s) after its wait", operation_id, options)

    def _free(self, operation_id: str) -> None:
        if operation_id in self._holding:
            self._holding.discard(operation_id)
            self._slots.release_on_behalf_of(operation_id)

    async def _submit(self, op: Operation, options: Mapping[str, Any], attempt: int) -> _Follow:
        # Only this attempt's actor pushes into the run: a new credential replaces the last one.
        push = await issue_push_credential(self._db, op.operation_id)
        kind, args = actor_args(op, dict(options), self.config, push, self._interval)
        actor = await anyio.to_thread.run_sync(
            self._create_actor, op.operation_id, options, kind, args
        )
        return _Follow(actor, attempt=attempt, options=options)

    def _create_actor(
        self, operation_id: str, options: Mapping[str, Any], kind: str, args: tuple[Any, ...]
    ) -> Any:
        from host_bridge import ray_worker

        remote = self._ray.remote(getattr(ray_worker, kind)).options(
            name=ray_worker.actor_name(operation_id),
            lifetime="detached",  # outlives this process: a restarted server re-attaches it
            max_restarts=0,  # retries are this module's: a fresh actor, started on purpose
            max_concurrency=8,  # wait() calls of a restarted server beside the old ones
            **options,
        )
        return remote.remote(*args)

    # -- following a run ----------------------------------------------------------------------

    def _follow(self, operation_id: str, follow: _Follow) -> None:
        self._follows[operation_id] = follow
        self._tg.start_soon(self._walk, operation_id, follow)

    async def _walk(self, operation_id: str, follow: _Follow) -> None:
        """Follow one actor to its end, then free the run's slot (unless a retry follows it)."""
        try:
            await self._walk_actor(operation_id, follow)
        finally:
            if operation_id not in self._follows:
                self._free(operation_id)

    async def _walk_actor(self, operation_id: str, follow: _Follow) -> None:
        """Cancelled (the server stopping), it leaves the actor be: the run trains on, and the
        next server re-attaches it."""
        try:
            try:
                await self._drive(operation_id, follow)
            except self._ray.exceptions.RayActorError as exc:
                follow.done.set()
                if self._release(operation_id, follow):  # not killed by `stop` on purpose
                    await self._lost(operation_id, follow, exc)
                return
        except Exception as exc:  # the top of a follower: the run must end, the server stays up
            log.exception("run %s: following it on Ray failed", operation_id)
            with contextlib.suppress(Exception):
                await self._ingestor.record_end(
                    operation_id,
                    OperationStatus.FAILED,
                    error=f"internal error following the run on Ray: {describe_death(exc)}",
                )
        finally:
            follow.done.set()
        if self._release(operation_id, follow):
            await anyio.to_thread.run_sync(self._kill, follow.actor)

    async def _drive(self, operation_id: str, follow: _Follow) -> None:
        ready = await follow.actor.ready.remote()
        follow.options = ready["options"]
        if not await self._mark_running(operation_id, str(ready["device"])):
            return  # stopped while it waited to be placed
        started = await follow.actor.start.remote()
        if "error" in started:
            await self._ingestor.record_end(
                operation_id,
                OperationStatus.FAILED,
                error=f"the Ray worker refused the run: {started['error']['message']}",
            )
            return
        info = None
        while info is None:
            try:
                info = await follow.actor.wait.remote(WAIT_SLICE_S)
            except self._ray.exceptions.ActorUnavailableError as exc:  # transient: ask again
                log.info("run %s: actor unavailable (%s)", operation_id, exc)
                await anyio.sleep(1.0)
        if "returncode" in info:  # a script run: its exit code, as for a local script
            status, error, reason = script_outcome(
                int(info["returncode"]), info["stop_reason"], str(info["stderr_tail"])
            )
            await self._keep_logs(operation_id, follow)
            await self._ingestor.record_end(operation_id, status, error=error, reason=reason)
            return
        session = SessionInfo.model_validate(info)
        await self._ingestor.record_end(
            operation_id,
            OperationStatus(session.status),
            error=session.error,
            reason=session.reason,
        )

    # -- a script run's logs -------------------------------------------------------------------

    async def logs(self, op: Operation, query: LogsQuery) -> OperationLogs:
        """A Ray script run's stdout or stderr: from its actor while it runs, from the copy this
        server kept once it ended."""
        kept = self._logs_folder(op.operation_id)
        if await anyio.Path(kept).is_dir():
            return await anyio.to_thread.run_sync(
                lambda: read_log(
                    kept, op.operation_id, query.stream, tail=query.tail, cursor=query.cursor
                )
            )
        follow = self._follows.get(op.operation_id)
        if follow is None:
            raise NotFoundError(
                f"operation_id: no logs of {op.operation_id!r} are kept (its Ray actor ended "
                "before this server collected them)",
                field="operation_id",
            )
        try:
            answer = await follow.actor.logs.remote(query.model_dump())
        except self._ray.exceptions.RayError as exc:
            raise UnavailableError(
                f"operation_id: its Ray actor did not give the logs: {describe_death(exc)}",
                field="operation_id",
            ) from exc
        return OperationLogs.model_validate(answer)

    async def _keep_logs(self, operation_id: str, follow: _Follow) -> None:
        """The ended script's log files, from its node into this server's `logs/<run>/`."""
        try:
            files: dict[str, bytes] = await follow.actor.collect_logs.remote()
        except self._ray.exceptions.RayError as exc:
            log.warning("run %s: its logs could not be collected: %s", operation_id, exc)
            return
        folder = self._logs_folder(operation_id)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (folder / Path(name).name).write_bytes(data)  # a bare name: never elsewhere

        await anyio.to_thread.run_sync(write)

    def _logs_folder(self, operation_id: str) -> Path:
        return self.config.logs_dir / operation_id

    def _release(self, operation_id: str, follow: _Follow) -> bool:
        """Stop tracking `follow`, unless something newer (a retry) replaced it already."""
        if self._follows.get(operation_id) is not follow:
            return False
        del self._follows[operation_id]
        return True

    async def _mark_running(self, operation_id: str, device: str) -> bool:
        try:
            await self._ingestor.record_status(operation_id, OperationStatus.RUNNING, device=device)
        except IllegalTransitionError:
            return False
        return True

    async def _lost(self, operation_id: str, follow: _Follow, exc: BaseException) -> None:
        why = describe_death(exc)
        op = await get_operation(self._db, operation_id)
        if op.finished:
            return  # the run ended before its worker did (collected late): that end stands
        if follow.attempt <= self.config.ray_retries:
            log.warning(
                "run %s: its Ray worker died (%s); attempt %d of %d",
                operation_id,
                why,
                follow.attempt + 1,
                self.config.ray_retries + 1,
            )
            self._follow(operation_id, await self._submit(op, follow.options, follow.attempt + 1))
            return
        log.warning("run %s: %s: %s", operation_id, RAY_LOST, why)
        await self._ingestor.record_end(
            operation_id,
            OperationStatus.FAILED,
            error=f"{RAY_LOST}: {why} (its {op.epochs_done} stored epochs are kept)",
            reason=RAY_LOST,
        )

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception as exc:  # already gone
            log.debug("kill: %s", exc)

    # -- cancel -------------------------------------------------------------------------------

    async def stop(self, op: Operation, reason: str) -> Operation:
        """Cancel on the worker (within one batch), wait (at most CANCEL_WAIT_S) until it has
        delivered every point, then record the run cancelled. A run still waiting to be placed
        is cancelled at once; one whose actor cannot be reached is cancelled here all the same
        (its next heartbeat is refused, and that stops it)."""
        waiting = self._waiting.get(op.operation_id)
        if waiting is not None:  # queued for a slot: no actor yet
            waiting.cancel()
        follow = self._follows.get(op.operation_id)
        if follow is None or op.status is OperationStatus.QUEUED:
            if follow is not None and self._release(op.operation_id, follow):
                await anyio.to_thread.run_sync(self._kill, follow.actor)
            return await self._ingestor.record_end(
                op.operation_id, OperationStatus.CANCELLED, reason=reason
            )
        note = ""
        try:
            with anyio.fail_after(CANCEL_WAIT_S):
                await follow.actor.cancel.remote(reason)
        except (TimeoutError, self._ray.exceptions.RayError) as exc:
            note = f" (the Ray worker could not be told: {describe_death(exc)})"
        if not note:
            with anyio.move_on_after(CANCEL_WAIT_S):
                await follow.done.wait()
        return await self._ingestor.record_end(
            op.operation_id, OperationStatus.CANCELLED, reason=reason + note
        )

    # -- restart ------------------------------------------------------------------------------

    async def reattach(self) -> int:
        """After a restart: find each active Ray run's actor by name and follow it again (it
        takes its slot again, if one is free). A run whose actor the cluster no longer has
        failed (its worker is gone), or was interrupted while it was queued for a slot."""
        from host_bridge.ray_worker import actor_name

        ops: list[Operation] = []
        for status in _ACTIVE:
            ops += await list_operations(self._db, status=status, backend=Backend.RAY, limit=10_000)
        attached = 0
        for op in ops:
            name = actor_name(op.operation_id)
            try:
                actor = await anyio.to_thread.run_sync(self._ray.get_actor, name)
            except ValueError:
                if op.status is OperationStatus.QUEUED:  # it waited for a slot, or placement
                    await self._ingestor.record_end(
                        op.operation_id,
                        OperationStatus.INTERRUPTED,
                        reason="the server stopped while this run was queued; nothing of it "
                        "ran on the cluster",
                    )
                    continue
                await self._ingestor.record_end(
                    op.operation_id,
                    OperationStatus.FAILED,
                    error=f"{RAY_LOST}: the cluster has no actor {name!r} for this run "
                    f"(its {op.epochs_done} stored epochs are kept)",
                    reason=RAY_LOST,
                )
                continue
            try:
                self._slots.acquire_on_behalf_of_nowait(op.operation_id)
                self._holding.add(op.operation_id)
            except anyio.WouldBlock:  # more alive on the cluster than the limit now allows
                log.warning("run %s: re-attached past --max-concurrent-runs", op.operation_id)
            self._follow(op.operation_id, _Follow(actor, attempt=1, options={"num_cpus": 1}))
            attached += 1
        if attached:
            log.info("re-attached %d Ray runs", attached)
        return attached

    def _require(self) -> None:
        if self._ray is None:
            if not ray_installed():
                _import_ray()  # raises, saying how to install it
            raise UnavailableError(
                "backend: this server has no Ray cluster; serve with --ray auto (a local Ray) "
                "or --ray ADDRESS",
                field="backend",
            )


def _connect(config: ServerConfig) -> Any:
    ray = _import_ray()
    address = None if config.ray_address == "auto" else config.ray_address
    try:
        _init(ray, address, config.ray_namespace)
    except ConnectionError as exc:
        # A Ray Client head starts a server per client, and under load that start can time out
        # ("Starting Ray client server failed"): ask once more before giving up.
        if not (address or "").startswith("ray://"):
            raise
        log.warning("the Ray Client at %s refused the connection (%s); asking again", address, exc)
        ray.shutdown()
        _init(ray, address, config.ray_namespace)
    return ray


def _init(ray: Any, address: str | None, namespace: str) -> None:
    ray.init(
        address=address,
        namespace=namespace,
        log_to_driver=False,  # workers' output must never reach stdout (the stdio transport)
        logging_level=logging.WARNING,
        configure_logging=False,
    )


@asynccontextmanager
async def open_ray(
    config: ServerConfig,
    db: Database,
    ingestor: Ingestor,
    heartbeat_interval_s: float,
    slots: anyio.CapacityLimiter | None = None,
) -> AsyncIterator[RayBackend]:
    """The Ray backend for as long as the service runs: connected (and runs re-attached) when
    `config.ray_address` is set, an unconfigured one that explains itself otherwise. Leaving it
    stops following runs; the runs themselves keep training on the cluster."""
    ray = None
    if config.ray_address is not None:
        ray = await anyio.to_thread.run_sync(_connect, config)
        log.info("connected to Ray at %s", config.ray_address)
    try:
        async with anyio.create_task_group() as tg:
            backend = RayBackend(config, db, ingestor, tg, heartbeat_interval_s, ray, slots)
            if ray is not None:
                await backend.reattach()
            try:
                yield backend
            finally:
                tg.cancel_scope.cancel()
    finally:
        if ray is not None:
            await anyio.to_thread.run_sync(ray.shutdown)
