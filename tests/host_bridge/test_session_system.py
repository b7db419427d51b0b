"""A bridge session's system metrics: its process sampled while it trains, the points spooled and
pushed like every other (a scripted server behind httpx.MockTransport; GPU readings through the
reader seam, no GPU here)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from host_bridge.sessions import BridgeOptions, SessionManager
from tests.host_bridge.test_sessions import QUICK, SERVERS, Server, _request, wait_until
from training_mcp.system import GpuReading


class FixedGpus:
    def read(self) -> list[GpuReading]:
        return [GpuReading(0, 64.0, 2_000.0, 80_000.0, frozenset({os.getpid()}))]


def _manager(tmp_path: Path, server: Server, **options: object) -> SessionManager:
    opts = BridgeOptions(
        data_dir=tmp_path,
        retry=QUICK,
        max_pause_s=0.02,
        allowed_servers=SERVERS,
        **options,  # type: ignore[arg-type]
    )
    return SessionManager(opts, transport=httpx.MockTransport(server))


def test_a_session_pushes_its_cpu_memory_and_gpu_as_system_points(tmp_path: Path) -> None:
    server = Server()
    manager = _manager(tmp_path, server, system_interval_s=0.02, system_gpu=FixedGpus())
    try:
        manager.start(_request())
        wait_until(lambda: manager.get("op-a").delivered)
    finally:
        manager.close()
    names = {name for name, _ in server.points}
    assert {
        "system/cpu_percent",
        "system/rss_mb",
        "system/mem_percent",
        "system/gpu_util",
        "system/gpu_mem_mb",
        "system/gpu_mem_percent",
    } <= names
    times = sorted(step for name, step in server.points if name == "system/rss_mb")
    assert times and times[0] > 1_600_000_000_000  # milliseconds since the Unix epoch
    assert server.epochs() == [1, 2, 3, 4, 5]  # the epochs are untouched by the samples


def test_a_bridge_without_sampling_pushes_no_system_points(tmp_path: Path) -> None:
    server = Server()
    manager = _manager(tmp_path, server, system_interval_s=0)
    try:
        manager.start(_request())
        wait_until(lambda: manager.get("op-a").delivered)
    finally:
        manager.close()
    assert not [name for name, _ in server.points if name.startswith("system/")]
