"""The deferred MCP mount: requests before it is built wait for it; a failed build answers 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_server.lazy_mcp import LazyMcp, McpParts

pytestmark = pytest.mark.anyio


def _parts(running: list[str]) -> McpParts:
    async def hello(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello; sessions {running[-1]}")

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        running.append("running")
        yield
        running.append("stopped")

    return Starlette(routes=[Route("/mcp", hello)]), run


async def test_a_request_before_the_build_waits_for_it_and_is_served() -> None:
    running = ["none"]
    lazy = LazyMcp(lambda: _parts(running))
    early: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        early.append(lazy.ready.is_set())
        await lazy(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        with anyio.fail_after(30):
            async with lazy.lifespan():
                assert not lazy.ready.is_set()  # the build has not even started
                answer = await client.get("/mcp")  # so this one waits for it
            # the lifespan is over: the session manager stopped after the request was answered
    assert early == [False]
    assert answer.text == "hello; sessions running"
    assert running == ["none", "running", "stopped"]


async def test_a_build_that_fails_answers_500_and_says_why_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def build() -> McpParts:
        raise ValueError("no tools today")

    lazy = LazyMcp(build)
    transport = httpx.ASGITransport(app=lazy, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        with anyio.fail_after(30):
            async with lazy.lifespan():
                await lazy.ready.wait()
                answer = await client.get("/mcp")
    assert answer.status_code == 500
    assert "could not be built" in caplog.text and "no tools today" in caplog.text
