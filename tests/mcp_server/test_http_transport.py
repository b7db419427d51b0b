"""MCP over streamable HTTP on a real uvicorn: both protocol eras, DNS rebinding, the token."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ResourceUpdatedNotification

from mcp_server.core.service import TrainingService
from tests.mcp_server.conftest import TINY
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio


async def test_a_modern_http_client_follows_a_run_through_listen(service: TrainingService) -> None:
    async with live_server(service) as base, Client(streamable_http_client(f"{base}/mcp")) as c:
        assert c.protocol_version == "2026-07-28"
        started = await c.call_tool("start_training", TINY)
        assert started.structured_content is not None
        op = started.structured_content["operation_id"]
        async with c.listen(resource_subscriptions=[f"training://operations/{op}"]) as events:
            with anyio.fail_after(60):
                async for _ in events:
                    info = await c.call_tool("get_operation", {"operation_id": op})
                    assert info.structured_content is not None
                    if info.structured_content["status"] == "completed":
                        break
        assert info.structured_content["epochs_done"] == 3


async def test_a_legacy_http_session_receives_updates_on_its_subscription(
    service: TrainingService,
) -> None:
    updates: list[str] = []
    three = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            if len(updates) >= 3:
                three.set()

    async with (
        live_server(service) as base,
        streamable_http_client(f"{base}/mcp") as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        started = await session.call_tool("start_training", TINY)
        assert started.structured_content is not None
        uri = f"training://operations/{started.structured_content['operation_id']}/metrics"
        with pytest.warns(MCPDeprecationWarning):
            await session.subscribe_resource(uri)
        with anyio.fail_after(60):
            await three.wait()
    assert set(updates) == {uri}


async def test_a_foreign_host_header_is_refused(service: TrainingService) -> None:
    async with live_server(service) as base, httpx.AsyncClient() as http:
        response = await http.post(
            f"{base}/mcp",
            headers={
                "Host": "evil.example:8765",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    assert response.status_code == 421


async def test_with_a_token_mcp_needs_the_bearer_header(service: TrainingService) -> None:
    async with live_server(service, token="s3cret") as base:
        async with httpx.AsyncClient() as http:
            refused = await http.post(f"{base}/mcp", json={})
        assert refused.status_code == 401
        assert "s3cret" not in refused.text
        authed = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"})
        async with authed, Client(streamable_http_client(f"{base}/mcp", http_client=authed)) as c:
            tools = await c.list_tools()
    assert any(t.name == "start_training" for t in tools.tools)
