"""One Starlette app for HTTP: MCP (streamable HTTP) at /mcp, the REST mirror under /api/v1 and
the dashboard's pages at / and /runs/{id}, behind one optional bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.routing import Mount

from httpbase import BearerAuth
from httpbase.guard import GuardPolicy, RequestGuard
from mcp_server.config import Secret
from mcp_server.core.service import TrainingService
from mcp_server.dashboard import PAGE_PATHS, PAGE_PREFIXES, dashboard_routes
from mcp_server.lazy_mcp import LazyMcp, McpParts
from mcp_server.rest.routes import OPEN_PATHS, rest_routes

__all__ = ["build_app"]


def build_app(
    service: TrainingService,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: Secret | None = None,
) -> Starlette:
    """The HTTP app. `RequestGuard` checks Host, Origin and Content-Type for all of it (REST,
    docs, pages, MCP): loopback names always, plus `host` and the operator's allow-lists."""

    def build_mcp() -> McpParts:
        from mcp.server.transport_security import TransportSecuritySettings

        from mcp_server.mcp_sessions import SessionCap, SessionLimits
        from mcp_server.server import build_mcp_server

        mcp = build_mcp_server(service)
        # The guard below covers /mcp with the rest of the app; the SDK's own check would refuse
        # the names the operator allowed.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        mcp_app = mcp.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=security,
            max_sessions=service.config.mcp_max_sessions,
            session_idle_timeout=service.config.mcp_session_idle_s,
        )
        config = service.config
        limits = SessionLimits(
            config.mcp_sessions_per_client, config.mcp_max_sessions, config.mcp_session_idle_s
        )
        sessions = SessionCap(mcp_app, limits)  # one client cannot take every session
        return sessions, mcp.session_manager.run

    mcp_app = LazyMcp(build_mcp)  # built once the server answers: see mcp_server.lazy_mcp

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.lifespan():
            yield

    app = Starlette(
        routes=[*rest_routes(service), *dashboard_routes(), Mount("/", app=mcp_app)],
        lifespan=lifespan,
    )
    app.add_middleware(
        BearerAuth,
        token=token.reveal() if token else None,
        open_paths=OPEN_PATHS | PAGE_PATHS,
        open_prefixes=PAGE_PREFIXES,
    )
    config = service.config
    hosts = list(config.allowed_hosts)
    if config.public_url:  # the name bridges reach this server by
        hosts.append(urlsplit(config.public_url).hostname or "")
    policy = GuardPolicy.for_server(host, hosts, config.allowed_origins)
    app.add_middleware(RequestGuard, policy=policy)  # outermost: before the token is looked at
    app.state.mcp_ready = mcp_app.ready
    return app
