"""Finding 6: 10,000 never-closed MCP-over-HTTP sessions locked every new MCP client out (503) for
30 minutes. Replayed, scaled down through the flags, on a real `serve --http`: one client that
never closes its sessions is refused past its own cap (429 naming the flag) while other clients
(other loopback addresses) still get in; a closed session frees its place at once and idle ones
are reclaimed, never a session a real client is using."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.host_bridge.processes import Process, running
from tests.security.conftest import serve_process

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "leaky", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream"}
SESSION = "mcp-session-id"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("mcp-sessions")
    flags = ["--mcp-sessions-per-client", "2", "--max-mcp-sessions", "4"]
    with running(serve_process(tmp, *flags, "--mcp-session-idle", "1")) as (process,):
        yield process


@asynccontextmanager
async def raw(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP from one loopback address: a client the server tells apart from the others."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        yield http


@asynccontextmanager
async def mcp_client(url: str, address: str, mode: str = "legacy") -> AsyncIterator[Client]:
    """The SDK's Client over streamable HTTP; legacy: with a session (the initialize handshake),
    auto: the stateless protocol this server offers."""
    transport = httpx2.AsyncHTTPTransport(local_address=address)
    async with (
        httpx2.AsyncClient(transport=transport, timeout=10) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


async def open_session(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.post(f"{url}/mcp", json=INIT, headers=HEADERS)


async def test_one_client_is_capped_and_the_others_still_get_in(server: Process) -> None:
    url = server.url
    async with raw("127.0.0.1") as leaky, raw("127.0.0.3") as third:
        held = [await open_session(leaky, url) for _ in range(2)]
        assert all(r.status_code == 200 and r.headers.get(SESSION) for r in held)
        refused = await open_session(leaky, url)
        assert refused.status_code == 429, refused.text
        message = refused.json()["error"]["message"]
        assert "--mcp-sessions-per-client 2" in message and "--mcp-session-idle" in message

        # A stateless (2026-07-28) client from the same address opens no session: not refused.
        async with mcp_client(url, "127.0.0.1", mode="auto") as modern:
            assert (await modern.list_tools()).tools
        # Another client is not locked out: a real MCP client works beside the leaky one.
        async with mcp_client(url, "127.0.0.2") as other:
            assert any(t.name == "start_training" for t in (await other.list_tools()).tools)
            # Four open in all: a fifth client gets the server-wide cap, naming its flag.
            assert (await open_session(third, url)).status_code == 200
            full = await open_session(third, url)
            assert full.status_code == 503 and "--max-mcp-sessions 4" in full.text

            # A session its client closes gives its place back at once.
            closed = await leaky.delete(
                f"{url}/mcp",
                headers={
                    **HEADERS,
                    SESSION: held[0].headers[SESSION],
                    "mcp-protocol-version": "2025-11-25",
                },
            )
            assert closed.status_code == 200, closed.text
            assert (await open_session(leaky, url)).status_code == 200

            # Idle sessions (no request in flight for 1 s) are reclaimed; the real client's
            # session, with its event stream open, is not.
            with anyio.fail_after(20):
                again = await open_session(leaky, url)
                while again.status_code != 200:
                    await anyio.sleep(0.1)
                    again = await open_session(leaky, url)
            assert (await other.list_tools()).tools
        stale = await leaky.post(
            f"{url}/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            headers={**HEADERS, SESSION: held[1].headers[SESSION]},
        )
        assert stale.status_code == 404  # reclaimed: the client must initialize again
