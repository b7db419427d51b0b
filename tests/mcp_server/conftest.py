from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_server.config import ServerConfig
from mcp_server.core.service import TrainingService, open_service
from mcp_server.server import build_mcp_server

# Small, fast runs: a few hundred samples, a tiny MLP, one torch thread.
TINY = {"dataset": "blobs", "epochs": 3, "hidden_sizes": [16], "batch_size": 64}


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,))


@pytest.fixture
async def service(config: ServerConfig) -> AsyncIterator[TrainingService]:
    async with open_service(config) as svc:
        yield svc


@pytest.fixture
async def client(service: TrainingService) -> AsyncIterator[Client]:
    async with Client(build_mcp_server(service)) as c:
        yield c
