"""One Starlette app for HTTP: MCP (streamable HTTP) at /mcp, the REST mirror under /api/v1 and
the dashboard's pages at / and /runs/{id}, behind one optional bearer token."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from host_bridge.guard import GuardPolicy, RequestGuard
from mcp_server.config import Secret
from mcp_server.core.service import TrainingService
from mcp_server.dashboard import PAGE_PATHS, PAGE_PREFIXES, dashboard_routes
from mcp_server.rest.routes import OPEN_PATHS, rest_routes
from mcp_server.server import build_mcp_server

__all__ = ["BearerAuth", "build_app", "is_loopback"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


class BearerAuth:
    """Every route but the open ones needs `Authorization: Bearer <token>` when a token is set.
    Compared in constant time; the token is never logged. `open_prefixes` are for pages that
    carry no data (the dashboard reads everything through the API, with the token)."""

    def __init__(
        self,
        app: ASGIApp,
        token: Secret | None,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self._token = token.reveal().encode() if token else None
        self._open = open_paths
        self._open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._token is None
            or scope["type"] != "http"
            or scope["path"] in self._open
            or scope["path"].startswith(self._open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            response = JSONResponse(
                {
                    "error": {
                        "code": "unauthorized",
                        "message": "Authorization: a valid 'Bearer <token>' header is required",
                        "field": "Authorization",
                    }
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(
    service: TrainingService,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: Secret | None = None,
) -> Starlette:
    """The HTTP app. `RequestGuard` checks Host, Origin and Content-Type for all of it (REST,
    docs, pages, MCP): loopback names always, plus `host` and the operator's allow-lists."""
    mcp = build_mcp_server(service)
    # The guard below covers /mcp with the rest of the app; the SDK's own check would refuse
    # the names the operator allowed.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = Starlette(
        routes=[*rest_routes(service), *dashboard_routes(), Mount("/", app=mcp_app)],
        lifespan=lifespan,
    )
    app.add_middleware(
        BearerAuth,
        token=token,
        open_paths=OPEN_PATHS | PAGE_PATHS,
        open_prefixes=PAGE_PREFIXES,
    )
    config = service.config
    hosts = list(config.allowed_hosts)
    if config.public_url:  # the name bridges reach this server by
        hosts.append(urlsplit(config.public_url).hostname or "")
    policy = GuardPolicy.for_server(host, hosts, config.allowed_origins)
    app.add_middleware(RequestGuard, policy=policy)  # outermost: before the token is looked at
    return app
