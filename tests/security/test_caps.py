"""Findings 6 and 7: caps. 10,000 never-closed MCP sessions locked every new client out for 30
minutes; 200 event streams slowed a run 26x; 50 runs with 1 MB of tags made the run list 50 MB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from storage import MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "caps", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    config = ServerConfig(
        data_dir=tmp_path,
        max_streams_per_run=2,
        max_streams=3,
        mcp_max_sessions=2,
        mcp_session_idle_s=1.0,
    )
    async with open_service(config) as service, live_server(service) as url:
        yield url


async def test_mcp_sessions_are_capped_and_idle_ones_close(base: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(2):
            opened = await http.post(f"{base}/mcp", json=INIT, headers=MCP_HEADERS)
            assert opened.status_code == 200, opened.text
        refused = await http.post(f"{base}/mcp", json=INIT, headers=MCP_HEADERS)
        assert refused.status_code == 503
        with anyio.fail_after(15):  # the idle ones close after 1 s: a new client gets in
            while refused.status_code == 503:
                await anyio.sleep(0.1)
                refused = await http.post(f"{base}/mcp", json=INIT, headers=MCP_HEADERS)
    assert refused.status_code == 200


async def _external(http: httpx.AsyncClient) -> str:
    started = (await http.post("/operations", json={"backend": "external"})).json()
    operation_id: str = started["operation_id"]
    return operation_id


async def test_event_streams_are_capped_per_run_and_in_all(base: str) -> None:
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=10) as http:
        a, b, c = [await _external(http) for _ in range(3)]
        async with (
            http.stream("GET", f"/operations/{a}/events") as first,
            http.stream("GET", f"/operations/{a}/events") as second,
        ):
            assert first.status_code == second.status_code == 200
            third = await http.get(f"/operations/{a}/events")
            assert third.status_code == 429
            assert third.json()["error"]["field"] == "events"
            async with http.stream("GET", f"/operations/{b}/events") as other:
                assert other.status_code == 200
                full = await http.get(f"/operations/{c}/events")
                assert full.status_code == 429 and "--max-event-streams" in full.text
        with anyio.fail_after(10):  # the closed streams give their slots back
            while True:
                async with http.stream("GET", f"/operations/{c}/events") as again:
                    if again.status_code == 200:
                        break
                await anyio.sleep(0.05)


async def test_the_run_list_stays_small_however_runs_are_tagged(base: str) -> None:
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as http:
        tags = {f"{i:0{MAX_TAG_KEY}d}": "v" * MAX_TAG_VALUE for i in range(MAX_TAGS)}
        for _ in range(50):
            response = await http.post("/operations", json={"backend": "external", "tags": tags})
            assert response.status_code == 202
        listed = await http.get("/operations", params={"limit": 50})
        assert listed.json()["returned"] == 50
        assert len(listed.content) < 1_000_000  # was 50 MB with 1 MB of tags per run
        refused = await http.post(
            "/operations", json={"backend": "external", "tags": {**tags, "one": "more"}}
        )
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "tags"
