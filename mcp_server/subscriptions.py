"""Resource change notifications in both MCP protocol eras.

2026-07-28 clients open `subscriptions/listen` streams fed by the SDK's `SubscriptionBus`.
2025-11-25 clients (the Inspector, TypeScript SDK 1.x, most clients today) call
`resources/subscribe`; MCPServer has no handler for it, so we register one on its low-level server
and keep each subscriber's session, whose standalone channel outlives the subscribe request.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from mcp.server.lowlevel import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourcesListChanged, ResourceUpdated
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from mcp_server.core.notify import Change

__all__ = ["OPERATIONS_URI", "Subscriptions", "uris_for"]

log = logging.getLogger(__name__)

OPERATIONS_URI = "training://operations"


def uris_for(change: Change) -> list[str]:
    """The resources a change makes stale."""
    if change.operation_id.startswith("sw-"):  # a sweep's own change (mcp_server.core.sweeps)
        return [f"training://sweeps/{change.operation_id}"]
    base = f"{OPERATIONS_URI}/{change.operation_id}"
    uris = [base, f"{base}/metrics", f"{base}/analysis"]
    if change.kind in ("created", "status"):
        uris.insert(0, OPERATIONS_URI)
    return uris


class Subscriptions:
    def __init__(self, server: MCPServer, bus: InMemorySubscriptionBus) -> None:
        self._bus = bus
        # uri -> {connection key: session}; the session's connection is per client.
        self._legacy: dict[str, dict[int, Any]] = defaultdict(dict)
        # The SDK keeps the low-level server private (its own TODO says it should be public).
        lowlevel = server._lowlevel_server
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        lowlevel.add_request_handler(
            "resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe
        )
        original = lowlevel.create_initialization_options

        def with_list_changed(
            notification_options: NotificationOptions | None = None,
            experimental_capabilities: dict[str, dict[str, Any]] | None = None,
            extensions: dict[str, dict[str, Any]] | None = None,
        ) -> InitializationOptions:
            # MCPServer advertises no resources.listChanged on the handshake era; we send it.
            return original(
                notification_options or NotificationOptions(resources_changed=True),
                experimental_capabilities,
                extensions,
            )

        lowlevel.create_initialization_options = with_list_changed  # type: ignore[method-assign]

    @staticmethod
    def _key(session: Any) -> int:
        return id(session._connection)

    async def _subscribe(self, ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        self._legacy[str(params.uri)][self._key(ctx.session)] = ctx.session
        return EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        self._legacy[str(params.uri)].pop(self._key(ctx.session), None)
        return EmptyResult()

    async def on_change(self, change: Change) -> None:
        for uri in uris_for(change):
            await self._bus.publish(ResourceUpdated(uri=uri))
            for session in list(self._legacy.get(uri, {}).values()):
                await session.send_resource_updated(uri)
        if change.kind == "created":
            await self._bus.publish(ResourcesListChanged())
            sessions = {k: s for subs in self._legacy.values() for k, s in subs.items()}
            for session in sessions.values():
                await session.send_resource_list_changed()
