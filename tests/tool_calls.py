"""Calling an MCP tool in a test: the one pair of helpers every test package uses."""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp.types import CallToolResult, TextContent


def tool_text(result: CallToolResult) -> str:
    """The text parts of a tool's answer, joined."""
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def call_tool(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """A tool call that must succeed: its structured answer."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, tool_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)
