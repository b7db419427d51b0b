"""Tools refuse arguments they do not take.

The MCP SDK validates a call's arguments against a model built from the tool's signature, and
that model ignores names it does not know: `start_training({"epoch": 2})` (a typo for `epochs`)
silently started the 20-epoch demo. After registration, each tool's argument model is swapped for
a subclass that forbids extra names, so the call is an error naming the argument.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from pydantic import ConfigDict

__all__ = ["forbid_unknown_arguments"]


def forbid_unknown_arguments(mcp: MCPServer) -> None:
    """Make every tool registered on `mcp` so far refuse unknown argument names."""
    # The SDK has no public hook for this; its tool manager is the one place tools live.
    for tool in mcp._tool_manager.list_tools():
        meta = tool.fn_metadata
        base = meta.arg_model
        if base.model_config.get("extra") == "forbid":
            continue
        config = ConfigDict(**{**base.model_config, "extra": "forbid"})
        meta.arg_model = type(base.__name__, (base,), {"model_config": config})
