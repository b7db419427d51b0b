"""Runs on a Ray cluster, seen from the server: submit, follow, cancel, re-attach, retry.

A Ray run is one detached, named actor (`host_bridge.ray_worker.RunActor`) holding the resources
the run asks for. The actor trains with the bridge's session code and pushes every epoch, its final
status and heartbeats to this server's REST mirror, into the one ingestion path; Ray itself only
places the actor, carries `stop_training` to it, and tells this module when its worker died. Per
run a follower task here walks the actor through `ready` (placed: the run is `running` on its
device), `start` and `wait`, each idempotent, so the same walk serves a new run, a retry and a run
re-attached after a server restart. A worker or node that dies fails the run with the reason
(`ray worker lost: ...`), or starts it again where the operator allowed retries (`--ray-retries`).

Ray is an optional extra imported only here (and on the workers), only when `--ray` is given.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from pydantic import SecretStr

from host_bridge.protocol import SessionInfo, SessionRequest
from mcp_server.config import ServerConfig
from mcp_server.core.errors import InvalidInputError, UnavailableError
from mcp_server.core.ingest import Ingestor
from mcp_server.core.models import RunResources
from storage import (
    Backend,
    Database,
    IllegalTransitionError,
    Operation,
    OperationStatus,
    create_operation,
    get_operation,
    list_operations,
)
from trainer.spec import TrainingSpec

__all__ = [
    "RAY_INSTALL",
    "RAY_LOST",
    "RayBackend",
    "actor_options",
    "describe_death",
    "open_ray",
    "ray_installed",
]

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


def actor_options(spec: TrainingSpec, resources: RunResources | None) -> dict[str, Any]:
    """The Ray resources a run reserves (pure): 1 CPU, 1 GPU for device 'cuda', no memory
    reservation, unless `resources` says otherwise."""
    wanted = resources or RunResources.model_validate({})
    gpus = wanted.num_gpus if wanted.num_gpus is not None else (1 if spec.device == "cuda" else 0)
    if spec.device == "cuda" and gpus == 0:
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


def describe_death(exc: BaseException) -> str:
    """A dead actor's error in one line: Ray's message without its indented id lines."""
    text = str(getattr(exc, "error_msg", None) or exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("\t")]
    return " ".join(lines)[:500] or type(exc).__name__


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
    ) -> None:
        self.config = config
        self._db = db
        self._ingestor = ingestor
        self._tg = tg
        self._interval = heartbeat_interval_s
        self._ray = ray
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
        """Create the run (`queued` until Ray has placed its actor) and submit it."""
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
        await self._ingestor.announce(op)
        try:
            follow = await self._submit(op, options, attempt=1)
        except Exception as exc:  # the cluster refused the actor: say why, keep the run's record
            message = f"backend: the Ray cluster did not take the run: {describe_death(exc)}"
            await self._ingestor.record_status(
                op.operation_id, OperationStatus.FAILED, error=message
            )
            raise UnavailableError(message, field="backend") from exc
        self._follow(op.operation_id, follow)
        log.info("run %s submitted to Ray (%s)", op.operation_id, options)
        return op

    async def _submit(self, op: Operation, options: Mapping[str, Any], attempt: int) -> _Follow:
        token = self.config.token.reveal() if self.config.token else None
        request = SessionRequest(
            operation_id=op.operation_id,
            spec=TrainingSpec.model_validate(op.spec),
            server_url=str(self.config.public_url),
            server_token=SecretStr(token) if token else None,
            heartbeat_interval_s=self._interval,
        )
        actor = await anyio.to_thread.run_sync(self._create_actor, request, options)
        return _Follow(actor, attempt=attempt, options=options)

    def _create_actor(self, request: SessionRequest, options: Mapping[str, Any]) -> Any:
        from host_bridge.ray_worker import RunActor, actor_name

        remote = self._ray.remote(RunActor).options(
            name=actor_name(request.operation_id),
            lifetime="detached",  # outlives this process: a restarted server re-attaches it
            max_restarts=0,  # retries are this module's: a fresh actor, started on purpose
            max_concurrency=8,  # wait() calls of a restarted server beside the old ones
            **options,
        )
        return remote.remote(
            request.model_dump_json(),
            dict(options),
            self.config.allow_factory,
            [str(p) for p in self.config.allowed_data_roots],
        )

    # -- following a run ----------------------------------------------------------------------

    def _follow(self, operation_id: str, follow: _Follow) -> None:
        self._follows[operation_id] = follow
        self._tg.start_soon(self._walk, operation_id, follow)

    async def _walk(self, operation_id: str, follow: _Follow) -> None:
        """Follow one actor to its end. Cancelled (the server stopping), it leaves the actor be:
        the run trains on, and the next server re-attaches it."""
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
        session = SessionInfo.model_validate(info)
        await self._ingestor.record_end(
            operation_id,
            OperationStatus(session.status),
            error=session.error,
            reason=session.reason,
        )

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
        """After a restart: find each active Ray run's actor by name and follow it again. A run
        whose actor the cluster no longer has failed (its worker is gone)."""
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
                await self._ingestor.record_end(
                    op.operation_id,
                    OperationStatus.FAILED,
                    error=f"{RAY_LOST}: the cluster has no actor {name!r} for this run "
                    f"(its {op.epochs_done} stored epochs are kept)",
                    reason=RAY_LOST,
                )
                continue
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
    ray.init(
        address=address,
        namespace=config.ray_namespace,
        log_to_driver=False,  # workers' output must never reach stdout (the stdio transport)
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    return ray


@asynccontextmanager
async def open_ray(
    config: ServerConfig, db: Database, ingestor: Ingestor, heartbeat_interval_s: float
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
            backend = RayBackend(config, db, ingestor, tg, heartbeat_interval_s, ray)
            if ray is not None:
                await backend.reattach()
            try:
                yield backend
            finally:
                tg.cancel_scope.cancel()
    finally:
        if ray is not None:
            await anyio.to_thread.run_sync(ray.shutdown)
