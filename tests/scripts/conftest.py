"""A real server for script runs: the service, uvicorn on a loopback port the scripts push to,
and an MCP client of the same service."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import uvicorn
from mcp import Client

from mcp_server.app import build_app
from mcp_server.config import ServerConfig
from mcp_server.core.relay import process_identity, read_json_file
from mcp_server.core.service import TrainingService, open_service
from mcp_server.server import build_mcp_server
from trainer.checkpoint_budget import CheckpointBudget

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ScriptServer:
    service: TrainingService
    client: Client
    url: str


@pytest.fixture(autouse=True)
def venv_python_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python` in a declared command is this interpreter (the scripts import training_mcp)."""
    path = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", path + ":" + os.environ.get("PATH", ""))


@asynccontextmanager
async def script_server(
    data_dir: Path,
    entry_points: Path,
    grace_s: float = 5.0,
    max_concurrent_runs: int = 2,
    checkpoints: CheckpointBudget | None = None,
) -> AsyncIterator[ScriptServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = ServerConfig(
        data_dir=data_dir,
        data_roots=(data_dir.parent,),
        public_url=url,
        entry_points_file=entry_points,
        script_grace_s=grace_s,
        max_concurrent_runs=max_concurrent_runs,
        checkpoints=checkpoints or CheckpointBudget(),
    )
    try:
        async with open_service(config) as service:
            app = build_app(service, port=port)
            server = uvicorn.Server(
                uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on")
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                try:
                    async with Client(build_mcp_server(service)) as client:
                        yield ScriptServer(service, client, url)
                finally:
                    server.should_exit = True
    finally:
        sock.close()
        end_scripts_left(data_dir / "logs")


def end_scripts_left(logs: Path) -> None:
    """Scripts outlive their server by design; a test that failed half-way leaves none behind."""
    for record in logs.glob("*/process.json"):
        process = read_json_file(record) or {}
        pid = process.get("pid")
        if isinstance(pid, int) and process_identity(pid) == process.get("identity"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def start_server(
    tmp_path: Path,
) -> Callable[..., AbstractAsyncContextManager[ScriptServer]]:
    def start(
        entry_points: Path,
        grace_s: float = 5.0,
        max_concurrent_runs: int = 2,
        checkpoints: CheckpointBudget | None = None,
    ) -> AbstractAsyncContextManager[ScriptServer]:
        return script_server(
            tmp_path / "data", entry_points, grace_s, max_concurrent_runs, checkpoints
        )

    return start
