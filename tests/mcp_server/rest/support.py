"""Shared by the REST tests: the app behind httpx.ASGITransport (lifespan run), the app behind a
real uvicorn on a free loopback port, and a Server-Sent Events reader."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import uvicorn

from mcp_server.app import build_app
from mcp_server.config import Secret
from mcp_server.core.service import TrainingService


@asynccontextmanager
async def asgi_client(
    service: TrainingService, token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the whole app in this process, its lifespan (the MCP session manager) running.
    ASGITransport buffers whole responses: event streams only of runs that end."""
    app = build_app(service, token=Secret(token) if token else None)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8765"
        ) as client,
    ):
        yield client


@asynccontextmanager
async def live_server(service: TrainingService, token: str | None = None) -> AsyncIterator[str]:
    """The app under a real uvicorn on a free loopback port; yields its base URL at once (the
    socket is listening before uvicorn starts, so early connections wait in its backlog)."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = build_app(service, port=port, token=Secret(token) if token else None)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
        )
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
    sock.close()


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Events of a text/event-stream response as they arrive (comments and retry lines skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Event(fields.get("id"), fields.get("event", "message"), fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


def parse_events(text: str) -> list[Event]:
    """Events of a whole, already received stream."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            (k, v.removeprefix(" "))
            for k, _, v in (line.partition(":") for line in block.splitlines())
            if k
        )
        if "data" in fields:
            events.append(Event(fields.get("id"), fields.get("event", "message"), fields["data"]))
    return events
