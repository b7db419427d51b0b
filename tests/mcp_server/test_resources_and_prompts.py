from __future__ import annotations

import json

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents

from tests.mcp_server.conftest import TINY

pytestmark = pytest.mark.anyio


async def _read(client: Client, uri: str) -> dict[str, object]:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    data: dict[str, object] = json.loads(content.text)
    return data


async def test_resources_serve_the_operation_metrics_and_analysis(client: Client) -> None:
    started = await client.call_tool("start_training", TINY)
    assert started.structured_content is not None
    op = started.structured_content["operation_id"]
    await client.call_tool("wait_for_operation", {"operation_id": op, "until": "end"})
    templates = {
        t.uri_template for t in (await client.list_resource_templates()).resource_templates
    }
    assert {
        "training://operations/{operation_id}",
        "training://operations/{operation_id}/metrics",
        "training://operations/{operation_id}/analysis",
    } <= templates
    listing = await _read(client, "training://operations")
    assert listing["returned"] == 1
    info = await _read(client, f"training://operations/{op}")
    assert info["status"] == "completed"
    metrics = await _read(client, f"training://operations/{op}/metrics")
    assert metrics["epochs_done"] == 3
    analysis = await _read(client, f"training://operations/{op}/analysis")
    assert analysis["epochs_analyzed"] == 3


async def test_an_unknown_operation_resource_is_not_found(client: Client) -> None:
    with pytest.raises(MCPError, match="op-nothing"):
        await client.read_resource("training://operations/op-nothing/metrics")


async def test_prompts_load_from_files_with_their_arguments(client: Client) -> None:
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(prompts) == {
        "monitor_training",
        "diagnose_training",
        "tune_hyperparameters",
        "compare_runs",
    }
    args = {a.name: a.required for a in prompts["monitor_training"].arguments or []}
    assert args == {"operation_id": True, "goal": False}
    rendered = await client.get_prompt("monitor_training", {"operation_id": "op-abc"})
    content = rendered.messages[0].content
    assert isinstance(content, TextContent)
    assert "op-abc" in content.text and "wait_for_operation" in content.text
    assert "(none given)" in content.text
