"""Finding 7, the run list: 50 runs with 1 MB of tags made `GET /operations` 50 MB and
`list_operations` 102 MB. Tags, names and specs are bounded now (test_stored_fields.py); here the
list itself: pages of at most `limit` runs (default 20, at most 100) walked with an opaque
cursor, newest first, every run exactly once however many are created meanwhile, on the REST
mirror and the MCP tool of a real server over a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from mcp_server.config import ServerConfig
from mcp_server.core.queries import MAX_LIST
from mcp_server.core.service import open_service
from storage import DB_FILENAME, MAX_JSON_BYTES, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    config = ServerConfig(data_dir=tmp_path)
    async with open_service(config) as service, live_server(service) as url:
        yield url, tmp_path / DB_FILENAME


async def _register(http: httpx.AsyncClient, n: int, **extra: Any) -> list[str]:
    ids = []
    for i in range(n):
        body = {"backend": "external", "name": f"run {i}", **extra}
        response = await http.post("/operations", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["operation_id"])
    return ids


def _newest_first(db_file: Path) -> list[str]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT id FROM operations ORDER BY created_at DESC, id DESC")
        return [r[0] for r in rows]


async def test_a_client_walks_every_run_exactly_once_newest_first(
    server: tuple[str, Path],
) -> None:
    url, db_file = server
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
        ids = await _register(http, 23)
        with sqlite3.connect(db_file) as conn:  # ties in created_at: the id decides
            conn.execute(
                "UPDATE operations SET created_at = 1000.5 WHERE id IN (?, ?, ?, ?)", ids[3:7]
            )
        expected = _newest_first(db_file)
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/operations", params=params)).json()
            seen += [op["operation_id"] for op in page["operations"]]
            pages += 1
            if pages == 2:  # runs created mid-walk are newer: they never enter it
                await _register(http, 3)
            cursor = page.get("next_cursor")
            if cursor is None:
                break
            assert page["returned"] == 5
        assert seen == expected and len(set(seen)) == 23 and pages == 5

        first = (await http.get("/operations")).json()
        assert first["returned"] == 20 and first["next_cursor"]
        for bad in ("nonsense", "e12", "x" * 200, "MTIzfA"):
            refused = await http.get("/operations", params={"cursor": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["error"]["field"] == "cursor"
        over = await http.get("/operations", params={"limit": MAX_LIST + 1})
        assert over.status_code == 422 and over.json()["error"]["field"] == "limit"


async def test_the_mcp_tool_pages_the_same_way_and_the_resource_stays_bounded(
    server: tuple[str, Path],
) -> None:
    url, db_file = server
    biggest = {
        "spec": {"blob": "x" * (MAX_JSON_BYTES - 20)},
        "tags": {f"{i:0{MAX_TAG_KEY}d}": "v" * MAX_TAG_VALUE for i in range(MAX_TAGS)},
    }
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
        await _register(http, 12, **biggest)
    async with Client(streamable_http_client(f"{url}/mcp")) as mcp:
        seen: list[str] = []
        arguments: dict[str, Any] = {"limit": 5}
        while True:
            result = await mcp.call_tool("list_operations", arguments)
            assert not result.is_error and result.structured_content is not None
            page = result.structured_content
            seen += [op["operation_id"] for op in page["operations"]]
            if page["next_cursor"] is None:
                break
            arguments = {"limit": 5, "cursor": page["next_cursor"]}
        assert seen == _newest_first(db_file)

        wrong = await mcp.call_tool("list_operations", {"cursor": "not-a-cursor"})
        assert wrong.is_error
        text = " ".join(c.text for c in wrong.content if isinstance(c, TextContent))
        assert "cursor" in text

        # The resource is the newest 50 (the first page): with every field at its bound a run
        # lists in under 30 KB, so the resource stays under 1.5 MB however runs are tagged.
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            await _register(http, 40)
        resource = await mcp.read_resource("training://operations")
        (content,) = resource.contents
        listed = json.loads(getattr(content, "text", ""))
        assert listed["returned"] == 50 and listed["next_cursor"]
        big = [op for op in listed["operations"] if op["tags"]]
        assert len(big) == 10  # the two oldest big runs are past the first page
        per_run = len(json.dumps(big[0], separators=(",", ":")))
        assert 20_000 < per_run < 30_000
