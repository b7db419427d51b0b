"""Checkpoints are "deleted with their run": `DELETE /api/v1/operations/{id}` and `training-mcp
delete` remove an ended run's metrics, push credential, checkpoints and logs, refuse a run still
queued or running (409 naming its status), and leave a run forked from it working. Real local
trainings on CPU, a real uvicorn server, the real SQLite file and the folders on disk."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from storage import DB_FILENAME
from tests.mcp_server.conftest import TINY
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    config = ServerConfig(data_dir=tmp_path / "data")
    async with (
        open_service(config) as service,
        live_server(service) as url,
        httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=60) as http,
    ):
        yield http, config.data_dir


def _rows(data_dir: Path, operation_id: str) -> dict[str, int]:
    """The run's rows in each table, read from the database file itself."""
    queries = {
        "operations": "SELECT count(*) FROM operations WHERE id = ?",
        "series": "SELECT count(*) FROM series WHERE operation_id = ?",
        "points": "SELECT count(*) FROM points JOIN series ON points.series_id = series.id "
        "WHERE series.operation_id = ?",
        "push_credentials": "SELECT count(*) FROM push_credentials WHERE operation_id = ?",
    }
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        return {t: conn.execute(q, (operation_id,)).fetchone()[0] for t, q in queries.items()}


async def _finished(http: httpx.AsyncClient, operation_id: str) -> dict[str, Any]:
    with anyio.fail_after(120):
        while True:
            waited = await http.get(f"/operations/{operation_id}")
            op: dict[str, Any] = waited.json()
            if op["status"] not in ("queued", "running"):
                return op
            async with http.stream("GET", f"/operations/{operation_id}/events") as events:
                async for _ in events.aiter_lines():  # ends when the run ends
                    pass


async def test_deleting_a_run_removes_its_rows_and_checkpoints_and_spares_its_fork(
    api: tuple[httpx.AsyncClient, Path],
) -> None:
    http, data_dir = api
    parent = (await http.post("/operations", json={**TINY, "epochs": 4})).json()["operation_id"]
    assert (await _finished(http, parent))["status"] == "completed"
    forked = await http.post(f"/operations/{parent}/fork", json={"from_epoch": 2})
    assert forked.status_code == 202, forked.text
    child = forked.json()["operation_id"]
    assert (await _finished(http, child))["status"] == "completed"
    parent_dir, child_dir = data_dir / "artifacts" / parent, data_dir / "artifacts" / child
    assert any(parent_dir.iterdir()) and any(child_dir.iterdir())
    before = _rows(data_dir, parent)
    assert before["points"] > 0

    deleted = await http.delete(f"/operations/{parent}")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["operation_id"] == parent and body["status"] == "completed"
    assert body["points_deleted"] == before["points"] and body["checkpoint_bytes_freed"] > 0
    assert _rows(data_dir, parent) == dict.fromkeys(before, 0)
    assert not parent_dir.exists()
    assert (await http.get(f"/operations/{parent}")).status_code == 404
    again = await http.delete(f"/operations/{parent}")
    assert again.status_code == 404 and again.json()["error"]["field"] == "operation_id"

    # The fork keeps its copied history, its checkpoints, and can itself be forked again.
    assert any(child_dir.iterdir())
    history = await http.get(f"/operations/{child}/metrics", params={"metrics": "val_loss"})
    assert history.json()["series"][0]["steps"][0] == 1
    refork = await http.post(f"/operations/{child}/fork", json={"from_epoch": "last"})
    assert refork.status_code == 202, refork.text
    await _finished(http, refork.json()["operation_id"])
    listed = [op["operation_id"] for op in (await http.get("/operations")).json()["operations"]]
    assert parent not in listed and child in listed


async def test_a_run_still_running_is_refused_naming_its_status_until_stopped(
    api: tuple[httpx.AsyncClient, Path],
) -> None:
    http, data_dir = api
    registered = (await http.post("/operations", json={"backend": "external"})).json()
    ext, credential = registered["operation_id"], registered["push_token"]
    point = {"points": [{"name": "val_loss", "step": 1, "value": 0.5}]}
    owner = {PUSH_TOKEN_HEADER: credential}
    assert (await http.post(f"/operations/{ext}/metrics", json=point, headers=owner)).is_success
    refused = await http.delete(f"/operations/{ext}")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "operation_id" and "is running" in error["message"]
    assert "stop it first" in error["message"]
    assert _rows(data_dir, ext)["push_credentials"] == 1  # nothing was deleted

    assert (await http.post(f"/operations/{ext}/cancel", json={})).status_code == 200
    assert (await http.delete(f"/operations/{ext}")).status_code == 200
    assert set(_rows(data_dir, ext).values()) == {0}
    # Its credential went with it: a push now finds no run, whoever sends it.
    gone = await http.post(f"/operations/{ext}/metrics", json=point, headers=owner)
    assert gone.status_code == 404


async def test_the_delete_command_removes_ended_runs_and_refuses_running_ones(
    api: tuple[httpx.AsyncClient, Path],
) -> None:
    http, data_dir = api
    done = (await http.post("/operations", json=TINY)).json()["operation_id"]
    await _finished(http, done)
    running = (await http.post("/operations", json={"backend": "external"})).json()
    command = [sys.executable, "-m", "mcp_server.cli", "delete", "--data-dir", str(data_dir)]
    result = await anyio.run_process(
        [*command, done, running["operation_id"], "op-nosuchrun"],
        check=False,
        stderr=subprocess.PIPE,
    )
    assert result.returncode == 1
    assert f'"operation_id":"{done}"' in result.stdout.decode()
    errors = result.stderr.decode()
    assert "is running" in errors and "op-nosuchrun" in errors
    assert (await http.get(f"/operations/{done}")).status_code == 404  # the live server agrees
    assert not (data_dir / "artifacts" / done).exists()
    assert (await http.get(f"/operations/{running['operation_id']}")).status_code == 200
