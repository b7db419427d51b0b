"""Findings 3 and 5: free-form stored fields, and who may push into a run.

3: an external run's `spec` nested 300 deep was stored unvalidated and then broke the run list,
the run's reads and the resource for everyone (500), across restarts; 1 MB of tags per run made
list answers 50 MB. 5: any client could write into a run the server trains itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.service import TrainingService, open_service
from mcp_server.server import build_mcp_server
from storage import Backend, OperationStatus, create_operation, open_database
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,))


@pytest.fixture
async def api(config: ServerConfig) -> AsyncIterator[tuple[httpx.AsyncClient, TrainingService]]:
    async with (
        open_service(config) as service,
        live_server(service) as base,
        httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as http,
    ):
        yield http, service


def _field(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    field: str = response.json()["error"]["field"]
    return field


async def test_a_deep_or_huge_free_form_field_is_refused_where_it_arrives(
    api: tuple[httpx.AsyncClient, TrainingService],
) -> None:
    http, _ = api
    external = {"backend": "external"}
    assert _field(await http.post("/operations", json={**external, "spec": _deep(300)}), 422) == (
        "spec"
    )
    big_tags = {f"k{i}": "v" * 1000 for i in range(1000)}
    assert _field(await http.post("/operations", json={**external, "tags": big_tags}), 422) == (
        "tags"
    )
    long_value = {"team": "v" * 300}
    assert _field(await http.post("/operations", json={**external, "tags": long_value}), 422) == (
        "tags"
    )
    huge_spec = {"blob": "x" * 100_000}
    assert _field(await http.post("/operations", json={**external, "spec": huge_spec}), 422) == (
        "spec"
    )
    assert (await http.get("/operations")).json()["operations"] == []
    fits = await http.post("/operations", json={**external, "spec": _deep(20), "tags": {"a": "b"}})
    assert fits.status_code == 202


async def test_a_run_stored_the_old_way_is_still_readable_everywhere(config: ServerConfig) -> None:
    """A row written before the bounds (300 deep, 1 MB of tags, a long name) reads back with a
    note in place of what is past them; its status can still be reported."""
    config.data_dir.mkdir(parents=True)
    db = await open_database(config.database_url)
    old = await create_operation(
        db,
        name="n" * 5000,
        backend=Backend.EXTERNAL,
        spec=_deep(300),
        tags={f"k{i}": "v" * 1000 for i in range(1000)},
        status=OperationStatus.RUNNING,
    )
    await db.close()
    async with (
        open_service(config) as service,
        live_server(service) as base,
        httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as http,
    ):
        listed = await http.get("/operations")
        assert listed.status_code == 200, listed.text
        (row,) = listed.json()["operations"]
        assert "unreadable" in row["spec"] and "deeper than" in row["spec"]["unreadable"]
        assert set(row["tags"]) == {"unreadable"}
        assert len(row["name"]) == 200
        assert len(listed.content) < 10_000
        one = await http.get(f"/operations/{old.operation_id}")
        assert one.status_code == 200
        done = await http.post(f"/operations/{old.operation_id}/status", json={"status": "failed"})
        assert done.status_code == 200, done.text
        assert (await http.get(f"/operations/{old.operation_id}")).json()["status"] == "failed"
        async with Client(build_mcp_server(service)) as mcp:
            tool = await mcp.call_tool("list_operations", {})
            assert not tool.is_error
            resource = await mcp.read_resource("training://operations")
            assert "unreadable" in json.dumps(resource.model_dump(mode="json"))


async def test_only_the_runs_own_source_may_push_into_it(
    api: tuple[httpx.AsyncClient, TrainingService],
) -> None:
    http, service = api
    local = await http.post(
        "/operations", json={"dataset": "blobs", "epochs": 2, "hidden_sizes": [8]}
    )
    local_id = local.json()["operation_id"]
    assert local.json()["push_token"] is None
    forged = {"points": [{"name": "val_loss", "step": 250, "value": 999.0}]}
    refused = await http.post(f"/operations/{local_id}/metrics", json=forged)
    assert _field(refused, 409) == "operation_id"
    assert "takes no pushed points" in refused.json()["error"]["message"]

    registered = (await http.post("/operations", json={"backend": "external", "epochs": 5})).json()
    ext, credential = registered["operation_id"], registered["push_token"]
    assert credential
    point = {"points": [{"name": "val_loss", "step": 1, "value": 0.5}]}
    url = f"/operations/{ext}/metrics"
    assert _field(await http.post(url, json=point), 403) == PUSH_TOKEN_HEADER
    wrong = {PUSH_TOKEN_HEADER: credential + "x"}
    assert _field(await http.post(url, json=point, headers=wrong), 403) == PUSH_TOKEN_HEADER
    status = f"/operations/{ext}/status"
    assert _field(await http.post(status, json={"status": "completed"}), 403) == PUSH_TOKEN_HEADER
    heartbeat = await http.post(f"/operations/{ext}/heartbeat", json={})
    assert _field(heartbeat, 403) == PUSH_TOKEN_HEADER
    owner = {PUSH_TOKEN_HEADER: credential}
    stored = await http.post(url, json=point, headers=owner)
    assert stored.json() == {"received": 1, "stored": 1, "duplicates": 0}

    with_run = await service.get_operation(local_id)
    assert with_run.epochs_done <= 2
    assert all(s.value != 999.0 for s in with_run.latest)
