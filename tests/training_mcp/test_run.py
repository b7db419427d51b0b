"""`training_mcp.init` / `log` / `finish` against the real server under uvicorn on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

import training_mcp
from mcp_server.core.service import TrainingService
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(service: TrainingService) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    async with (
        live_server(service) as base,
        httpx.AsyncClient(base_url=base + "/api/v1", timeout=30) as http,
    ):
        yield base, http


async def _epochs(http: httpx.AsyncClient, operation_id: str, name: str) -> list[int]:
    metrics = await http.get(f"/operations/{operation_id}/metrics", params={"metrics": name})
    steps: list[int] = metrics.json()["series"][0]["steps"]
    return steps


async def test_init_registers_a_run_with_its_config_and_finish_completes_it(
    server: tuple[str, httpx.AsyncClient],
) -> None:
    base, http = server

    def train() -> str:
        run = training_mcp.init(url=base, name="wandb-like", config={"lr": 0.1}, epochs=3)
        assert training_mcp.current_run() is run
        for epoch in (1, 2, 3):
            run.log(epoch, train_loss=1 / epoch, val_loss=1.5 / epoch)
        run.finish()
        run.finish()  # a second finish does nothing
        assert training_mcp.current_run() is None
        with pytest.raises(RuntimeError, match="finished"):
            run.log(4, train_loss=0.1)
        return run.id

    operation_id = await anyio.to_thread.run_sync(train)
    op = (await http.get(f"/operations/{operation_id}")).json()
    assert (op["name"], op["backend"], op["status"]) == ("wandb-like", "external", "completed")
    assert (op["spec"], op["epochs_total"], op["epochs_done"]) == ({"lr": 0.1}, 3, 3)
    assert await _epochs(http, operation_id, "val_loss") == [1, 2, 3]


async def test_the_module_level_log_and_finish_go_to_the_current_run(
    server: tuple[str, httpx.AsyncClient],
) -> None:
    base, http = server

    def train() -> str:
        with pytest.raises(RuntimeError, match="init"):
            training_mcp.log(1, train_loss=0.5)
        run = training_mcp.init(base, name="module level")
        training_mcp.log(1, {"train_loss": 0.5})
        training_mcp.log(2, train_loss=0.25)
        training_mcp.finish()
        training_mcp.finish()  # no current run: nothing
        return run.id

    operation_id = await anyio.to_thread.run_sync(train)
    assert (await http.get(f"/operations/{operation_id}")).json()["status"] == "completed"
    assert await _epochs(http, operation_id, "train_loss") == [1, 2]


async def test_an_exception_in_the_with_block_fails_the_run_and_still_propagates(
    server: tuple[str, httpx.AsyncClient],
) -> None:
    base, http = server

    def train() -> str:
        with (
            pytest.raises(ZeroDivisionError),
            training_mcp.init(base, name="crashes") as run,
        ):
            run.log(1, train_loss=0.5)
            _ = 1 / 0
        return run.id

    operation_id = await anyio.to_thread.run_sync(train)
    op = (await http.get(f"/operations/{operation_id}")).json()
    assert op["status"] == "failed"
    assert op["error"].startswith("ZeroDivisionError")
    assert await _epochs(http, operation_id, "train_loss") == [1]


async def test_init_without_arguments_attaches_to_the_run_named_by_the_environment(
    server: tuple[str, httpx.AsyncClient],
) -> None:
    base, http = server
    started = await http.post("/operations", json={"backend": "external", "name": "by server"})
    operation_id = started.json()["operation_id"]
    env = {
        "TRAINING_MCP_URL": base,
        "TRAINING_MCP_OPERATION_ID": operation_id,
        "TRAINING_MCP_TOKEN": "",
        "TRAINING_MCP_PUSH_TOKEN": started.json()["push_token"],
    }

    def train() -> str:
        # A script written for standalone use passes a name and config: it still attaches.
        with training_mcp.init(name="my script", config={"lr": 1}, env=env) as run:
            run.log(1, train_loss=0.5)
            run.log(1, {"step/train_loss": 0.7}, epoch=1)
        return run.id

    assert await anyio.to_thread.run_sync(train) == operation_id
    op = (await http.get(f"/operations/{operation_id}")).json()
    # The server's run: how it ends is the server's to say (from the process's exit code).
    assert (op["name"], op["status"], op["epochs_done"]) == ("by server", "running", 1)
    assert (await http.get("/operations")).json()["returned"] == 1


def test_init_without_a_url_anywhere_says_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"url: .*TRAINING_MCP_URL"):
        training_mcp.init(env={})
