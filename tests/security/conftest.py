"""Real servers for the security suite: `training-mcp serve --http` and `training-mcp bridge`
as processes on free loopback ports, tokenless (the default set-up the findings were made on),
started once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_bridge.processes import Process, free_port, running


def serve_process(tmp: Path, *extra: str, name: str = "server") -> Process:
    port = free_port()
    args = ["serve", "--http", "--port", str(port), "--data-dir", str(tmp / name)]
    args += ["--data-root", str(tmp), "--log-level", "WARNING", *extra]
    return Process(name, f"http://127.0.0.1:{port}", args, tmp / f"{name}.log")


def bridge_process(tmp: Path, *extra: str, name: str = "bridge") -> Process:
    port = free_port()
    args = ["bridge", "--port", str(port), "--data-dir", str(tmp / name)]
    args += ["--log-level", "WARNING", *extra]
    return Process(name, f"http://127.0.0.1:{port}", args, tmp / f"{name}.log")


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    tmp = tmp_path_factory.mktemp("security")
    server = serve_process(tmp, "--allowed-origin", "http://dashboard.example:8080")
    bridge = bridge_process(tmp, "--allowed-host", "gpu.example")
    with running(server, bridge):
        yield server, bridge


@pytest.fixture(scope="module")
def server_url(processes: tuple[Process, Process]) -> str:
    return processes[0].url


@pytest.fixture(scope="module")
def bridge_url(processes: tuple[Process, Process]) -> str:
    return processes[1].url
