"""Runs stored before push credentials existed (finding 5's fix): a database file made the old way,
with no `push_credentials` table, opens; its external run stays readable and, having no
credential, takes pushes from any client the server lets in (what the README says), while a run
registered after the change takes only its own source's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from storage import DB_FILENAME, Backend, OperationStatus, create_operation, open_database
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


async def _old_database(data_dir: Path) -> str:
    """A database as an earlier version left it: an external run, no credentials table."""
    await anyio.Path(data_dir).mkdir(parents=True)
    db = await open_database(ServerConfig(data_dir=data_dir).database_url)
    old = await create_operation(
        db, name="before", backend=Backend.EXTERNAL, spec={}, status=OperationStatus.RUNNING
    )
    await db.close()
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        conn.execute("DROP TABLE push_credentials")
    return old.operation_id


def _tables(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_a_run_from_before_credentials_stays_readable_and_pushable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old = await _old_database(data_dir)
    assert "push_credentials" not in _tables(data_dir)
    point = {"points": [{"name": "val_loss", "step": 1, "value": 0.5}]}
    async with (
        open_service(ServerConfig(data_dir=data_dir)) as service,
        live_server(service) as url,
        httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http,
    ):
        assert "push_credentials" in _tables(data_dir)  # the open added it, nothing else changed
        assert (await http.get(f"/operations/{old}")).json()["status"] == "running"
        plain = await http.post(f"/operations/{old}/metrics", json=point)
        assert plain.json() == {"received": 1, "stored": 1, "duplicates": 0}
        second = {"points": [{"name": "val_loss", "step": 2, "value": 0.4}]}
        any_token = await http.post(
            f"/operations/{old}/metrics", json=second, headers={PUSH_TOKEN_HEADER: "whatever"}
        )
        assert any_token.json()["stored"] == 1
        ended = await http.post(f"/operations/{old}/status", json={"status": "completed"})
        assert ended.status_code == 200, ended.text
        metrics = (await http.get(f"/operations/{old}/metrics")).json()
        assert metrics["series"][0]["steps"] == [1, 2]

        # A run registered now, in the same database, is its source's alone.
        new = (await http.post("/operations", json={"backend": "external"})).json()
        refused = await http.post(f"/operations/{new['operation_id']}/metrics", json=point)
        assert refused.status_code == 403
