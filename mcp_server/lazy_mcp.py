"""The MCP endpoint of the HTTP app, built after the server answers.

Importing the `mcp` SDK and registering the tools took longer than everything else `serve --http`
does before it is healthy (~0.7 s of ~1.1 s). So the HTTP app starts with the REST mirror and the
pages, and this mount builds the MCP app in the background once the lifespan starts, the imports
in a worker thread. A request that reaches it sooner waits for it; none is refused.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LazyMcp", "McpParts"]

log = logging.getLogger(__name__)

# The built app and its session manager's run(), which must be running while it serves.
McpParts = tuple[ASGIApp, Callable[[], AbstractAsyncContextManager[None]]]


def _import_sdk() -> None:
    # The SDK and every tool module, off the event loop.
    import mcp_server.mcp_sessions
    import mcp_server.server  # noqa: F401


class LazyMcp:
    """ASGI app: the MCP app once `build` has made it. Run `lifespan()` for as long as the
    server runs; `ready` is set once the MCP app serves."""

    def __init__(self, build: Callable[[], McpParts]) -> None:
        self._build = build
        self._parts: McpParts | None = None
        self._lock = anyio.Lock()
        self._started = False
        self.ready = anyio.Event()
        self._failed: BaseException | None = None

    async def _get(self) -> McpParts:
        async with self._lock:
            if self._parts is None:
                await anyio.to_thread.run_sync(_import_sdk)
                self._parts = self._build()
            return self._parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._started:
            await self.ready.wait()  # the session manager runs from then on
            if self._failed is not None:
                raise RuntimeError("the MCP endpoint could not be built") from self._failed
        app, _run = await self._get()
        await app(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        stop = anyio.Event()
        self._started = True

        async def serve() -> None:
            try:
                _app, run = await self._get()
                async with run():
                    self.ready.set()
                    await stop.wait()
            except Exception as exc:  # the REST mirror goes on; MCP requests get a 500
                log.exception("the MCP endpoint could not be built")
                self._failed = exc
                self.ready.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                yield
            finally:
                stop.set()
