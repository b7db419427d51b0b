"""The server's side of bridges: choosing one (pure), and dispatch, cancel, heartbeats, the
watchdog and re-attach against scripted bridges (httpx.MockTransport) and a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from host_bridge.protocol import BridgeHealth, GpuInfo
from mcp_server.config import BridgeTarget, Secret, ServerConfig
from mcp_server.core.dispatch import (
    BRIDGE_LOST,
    BridgeDispatcher,
    BridgeState,
    choose_bridge,
    open_bridges,
)
from mcp_server.core.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from mcp_server.core.history import AnalysisCache
from mcp_server.core.ingest import Ingestor
from mcp_server.core.notify import Notifier
from storage import (
    Backend,
    Database,
    OperationStatus,
    create_operation,
    get_operation,
    list_operations,
    open_database,
)
from trainer.spec import TrainingSpec

pytestmark = pytest.mark.anyio

GPU = "http://gpu.test:8766"
CPU = "http://cpu.test:8766"


def _health(*, gpu: bool, running: int = 0, token_accepted: bool | None = None) -> BridgeHealth:
    devices = [GpuInfo(index=0, name="H200", total_memory_bytes=141 << 30)] if gpu else []
    return BridgeHealth(
        version="0.1.0",
        torch_version="2.13.0",
        cuda_available=gpu,
        devices=devices,
        best_device="cuda" if gpu else "cpu",
        sessions_running=running,
        max_sessions=2,
        token_accepted=token_accepted,
    )


def _state(url: str, **health: Any) -> BridgeState:
    return BridgeState(BridgeTarget(url), health=_health(**health))


# -- choosing a bridge (pure) ---------------------------------------------------------------


def test_cuda_goes_to_a_bridge_with_a_gpu_and_cpu_prefers_one_too() -> None:
    states = [_state(CPU, gpu=False), _state(GPU, gpu=True)]
    assert choose_bridge("cuda", states).url == GPU
    assert choose_bridge("cpu", states).url == GPU
    assert choose_bridge("cpu", [_state(CPU, gpu=False)]).url == CPU


def test_the_least_busy_bridge_wins_among_equals_and_a_full_one_never() -> None:
    busy, idle = _state(GPU, gpu=True, running=1), _state(GPU + "/2", gpu=True, running=0)
    assert choose_bridge("cuda", [busy, idle]).url == GPU + "/2"
    full = _state(GPU, gpu=True, running=2)
    with pytest.raises(UnavailableError, match="full"):
        choose_bridge("cuda", [full])


def test_no_fitting_bridge_is_an_error_that_says_why_each_was_passed_over() -> None:
    down = BridgeState(BridgeTarget(GPU), problem="cannot reach it: ConnectError")
    with pytest.raises(UnavailableError) as exc:
        choose_bridge("cuda", [down, _state(CPU, gpu=False)])
    assert exc.value.field == "device"
    assert f"{GPU}: cannot reach it" in exc.value.message
    assert f"{CPU}: no CUDA GPU" in exc.value.message
    with pytest.raises(UnavailableError, match="no GPU host bridge is configured"):
        choose_bridge("cuda", [])


# -- the dispatcher against scripted bridges ------------------------------------------------


@dataclass
class Bridge:
    """A bridge's HTTP side: health, sessions, and what it was asked."""

    gpu: bool = True
    token: str | None = "btok"
    down: bool = False
    start_answer: tuple[int, dict[str, Any]] | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        self.requests.append(request)
        given = request.headers.get("authorization")
        authorised = self.token is None or given == f"Bearer {self.token}"
        path = request.url.path
        if path == "/health":
            health = _health(gpu=self.gpu, token_accepted=None if given is None else authorised)
            return httpx.Response(200, content=health.model_dump_json())
        if not authorised:
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})
        if path == "/sessions" and request.method == "POST":
            if self.start_answer is not None:
                return httpx.Response(self.start_answer[0], json=self.start_answer[1])
            body = json.loads(request.content)
            session = self._session(body["operation_id"], body["spec"]["epochs"])
            self.sessions[body["operation_id"]] = session
            return httpx.Response(201, json=session)
        operation_id = path.rsplit("/", 1)[-1]
        if operation_id not in self.sessions:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        session = self.sessions[operation_id]
        if request.method == "DELETE":
            session.update(status="cancelled", reason=request.url.params.get("reason"))
            session.update(cancel_requested=True, points_pending=0, delivered=True)
        return httpx.Response(200, json=session)

    @staticmethod
    def _session(operation_id: str, epochs: int, **values: Any) -> dict[str, Any]:
        return {
            "operation_id": operation_id,
            "status": "running",
            "device": "cuda",
            "epochs_total": epochs,
            "created_at": 1.0,
            **values,
        }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    db: Database
    ingestor: Ingestor
    make: Callable[..., Any]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    ingestor = Ingestor(db, Notifier(), AnalysisCache(db))

    @asynccontextmanager
    async def make(
        bridges: dict[str, Bridge], clock: Clock | None = None, **config: Any
    ) -> AsyncIterator[BridgeDispatcher]:
        def route(request: httpx.Request) -> httpx.Response:
            return bridges[f"{request.url.scheme}://{request.url.netloc.decode()}"](request)

        targets = tuple(BridgeTarget(url, Secret("btok")) for url in bridges)
        settings: dict[str, Any] = {
            "bridges": targets,
            "public_url": "http://server.test:8765",
            "token": Secret("stok"),
            "heartbeat_timeout_s": 2.0,
            **config,
        }
        async with open_bridges(
            ServerConfig(data_dir=tmp_path, **settings),
            db,
            ingestor,
            transport=httpx.MockTransport(route),
            clock=clock or Clock(),
        ) as dispatcher:
            yield dispatcher

    try:
        yield World(db, ingestor, make)
    finally:
        await db.close()


SPEC = TrainingSpec(epochs=3, device="cuda")


async def test_dispatch_creates_the_run_then_starts_it_on_the_bridge_with_what_it_needs(
    world: World,
) -> None:
    bridge = Bridge()
    async with world.make({GPU: bridge}) as bridges:
        op = await bridges.dispatch(SPEC, name="gpu run", tags={"k": "v"})
    assert (op.status, op.backend, op.bridge_url, op.device) == (
        OperationStatus.RUNNING,
        Backend.BRIDGE,
        GPU,
        "cuda",
    )
    start = next(r for r in bridge.requests if r.method == "POST")
    assert start.headers["authorization"] == "Bearer btok"
    body = json.loads(start.content)
    assert body["operation_id"] == op.operation_id
    assert (body["server_url"], body["server_token"]) == ("http://server.test:8765", "stok")
    assert body["heartbeat_interval_s"] == 0.5  # a quarter of the timeout
    assert body["spec"]["epochs"] == 3


async def test_a_wrong_token_is_found_by_the_probe_and_nothing_is_created(world: World) -> None:
    bridge = Bridge(token="other")
    async with world.make({GPU: bridge}) as bridges:
        with pytest.raises(UnavailableError, match="refuses this server's token"):
            await bridges.dispatch(SPEC, name="x")
        assert not any(r.method == "POST" for r in bridge.requests)
    assert bridge.sessions == {}


async def test_a_bridge_refusing_the_spec_fails_the_run_and_names_the_field(world: World) -> None:
    refusal = {"error": {"code": "invalid_input", "message": "nope", "field": "spec.dataset.path"}}
    bridge = Bridge(start_answer=(422, refusal))
    async with world.make({GPU: bridge}) as bridges:
        with pytest.raises(InvalidInputError) as exc:
            await bridges.dispatch(SPEC, name="x")
    assert exc.value.field == "spec.dataset.path" and "nope" in exc.value.message
    (op,) = await list_operations(world.db)
    assert op.status is OperationStatus.FAILED and op.error is not None and "nope" in op.error


async def test_no_reachable_bridge_is_a_clear_unavailable_error(world: World) -> None:
    async with world.make({GPU: Bridge(down=True)}) as bridges:
        with pytest.raises(UnavailableError, match="cannot reach"):
            await bridges.dispatch(SPEC, name="x")


async def test_stop_cancels_on_the_bridge_and_records_the_reason_once_it_has_flushed(
    world: World,
) -> None:
    bridge = Bridge()
    async with world.make({GPU: bridge}) as bridges:
        op = await bridges.dispatch(SPEC, name="x")
        stopped = await bridges.stop(op, "enough")
    assert (stopped.status, stopped.reason) == (OperationStatus.CANCELLED, "enough")
    cancel = next(r for r in bridge.requests if r.method == "DELETE")
    assert cancel.url.params["reason"] == "enough"


async def test_stop_with_the_bridge_gone_still_cancels_here_and_says_so(world: World) -> None:
    bridge = Bridge()
    async with world.make({GPU: bridge}) as bridges:
        op = await bridges.dispatch(SPEC, name="x")
        bridge.down = True
        stopped = await bridges.stop(op, "enough")
    assert stopped.status is OperationStatus.CANCELLED
    assert stopped.reason is not None and "could not be told" in stopped.reason


async def test_silence_past_the_timeout_fails_the_run_as_bridge_lost(world: World) -> None:
    clock = Clock()
    async with world.make({GPU: Bridge()}, clock) as bridges:
        op = await bridges.dispatch(SPEC, name="x")
        clock.now += 1.5
        await bridges.heartbeat(op.operation_id)
        clock.now += 1.5  # 3 s since dispatch, 1.5 s since the heartbeat
        assert await bridges.check_heartbeats() == []
        clock.now += 0.6
        assert await bridges.check_heartbeats() == [op.operation_id]
    lost = await get_operation(world.db, op.operation_id)
    assert lost.status is OperationStatus.FAILED
    assert lost.reason == BRIDGE_LOST and lost.error is not None
    assert lost.error.startswith(f"{BRIDGE_LOST}: no heartbeat from {GPU}")


async def test_a_heartbeat_for_an_ended_run_is_refused_which_tells_the_bridge_to_stop(
    world: World,
) -> None:
    async with world.make({GPU: Bridge()}) as bridges:
        op = await bridges.dispatch(SPEC, name="x")
        await world.ingestor.record_status(op.operation_id, OperationStatus.CANCELLED)
        with pytest.raises(ConflictError, match="already cancelled"):
            await bridges.heartbeat(op.operation_id)
        with pytest.raises(NotFoundError):
            await bridges.heartbeat("op-missing")
        local = await create_operation(world.db, name="l", backend=Backend.LOCAL, spec={})
        with pytest.raises(ConflictError, match="needs no heartbeat"):
            await bridges.heartbeat(local.operation_id)


async def test_after_a_restart_bridge_runs_are_reattached_by_asking_their_bridge(
    world: World,
) -> None:
    bridge = Bridge()

    async def bridge_run(status: OperationStatus = OperationStatus.RUNNING, url: str = GPU) -> str:
        op = await create_operation(
            world.db, name="b", backend=Backend.BRIDGE, spec={}, status=status, bridge_url=url
        )
        return op.operation_id

    running, unknown, cancelled, gone = (
        await bridge_run(),
        await bridge_run(),
        await bridge_run(),
        await bridge_run(url="http://gone.test:1"),
    )
    bridge.sessions[running] = Bridge._session(running, 3)
    bridge.sessions[cancelled] = Bridge._session(
        cancelled, 3, status="cancelled", reason="enough", delivered=True
    )
    clock = Clock()
    async with world.make({GPU: bridge}, clock) as bridges:
        assert await bridges.reattach() == 1
        clock.now += 1.9  # the heartbeat clock of the re-attached run started at the restart
        assert await bridges.check_heartbeats() == []

    async def status(operation_id: str) -> tuple[OperationStatus, str | None]:
        op = await get_operation(world.db, operation_id)
        return op.status, op.reason

    assert await status(running) == (OperationStatus.RUNNING, None)
    assert await status(unknown) == (OperationStatus.FAILED, BRIDGE_LOST)
    assert await status(cancelled) == (OperationStatus.CANCELLED, "enough")
    assert await status(gone) == (OperationStatus.FAILED, BRIDGE_LOST)
