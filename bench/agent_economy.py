"""Agent economy: the bytes of tool output an agent reads to follow a run and decide on it.

Run: .venv/bin/python bench/agent_economy.py
Through a real stdio MCP client against `training-mcp serve`, for a 100- and a 1,000-epoch
noisy_spirals run: the workflow the server's instructions give (wait_for_operation in a loop until
the run ends or the recommendation is to stop, then analyze_loss), the default loop of a naive
agent (only the operation id, until the run ends, then analyze_loss), and a loop of
until='end'. Text bytes are what a model reads (the text content of every tool result); each
figure is printed against its budget, and tools/list too.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {100: 15_000, 1_000: 20_000}
# The budget for the whole tools/list, whatever tools join: new tools pay for themselves
# with lean descriptions (tool output schemas are not listed at all: see mcp_server/server.py).
TOOLS_LIST_BUDGET = 20_000
FINAL = ("completed", "failed", "cancelled", "interrupted")
# Small enough to train 1,000 epochs in seconds; noisy_spirals still overfits.
RUN = {"dataset": "noisy_spirals", "hidden_sizes": [32, 32], "batch_size": 64}


@dataclass
class Reading:
    """What one agent read: tool calls, text bytes, and the decision it ended with."""

    calls: int = 0
    text_bytes: int = 0
    decision: dict[str, Any] = field(default_factory=dict)

    async def call(self, client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result: CallToolResult = await client.call_tool(tool, arguments)
        self.calls += 1
        self.text_bytes += sum(
            len(c.text.encode()) for c in result.content if isinstance(c, TextContent)
        )
        if result.is_error:
            raise RuntimeError(f"{tool}: {result.content}")
        content: dict[str, Any] | None = result.structured_content
        assert content is not None
        return content


async def _start(reading: Reading, client: Client, epochs: int) -> str:
    started = await reading.call(client, "start_training", {**RUN, "epochs": epochs})
    return str(started["operation_id"])


async def documented(client: Client, epochs: int) -> Reading:
    """The server's instructions: wait for decisions, stop on stop_and_restore_best."""
    reading = Reading()
    op = await _start(reading, client, epochs)
    while True:
        digest = await reading.call(client, "wait_for_operation", {"operation_id": op})
        indicators = digest.get("indicators") or {}
        if digest["status"] in FINAL or indicators.get("recommendation") == "stop_and_restore_best":
            break
    reading.decision = await reading.call(client, "analyze_loss", {"operation_id": op})
    if digest["status"] not in FINAL and reading.decision["recommendation"] in (
        "stop_and_restore_best",
    ):
        await reading.call(client, "stop_training", {"operation_id": op, "reason": "analysis"})
    return reading


async def naive(client: Client, epochs: int) -> Reading:
    """Only the operation id, in a loop until the run ends; then the analysis."""
    reading = Reading()
    op = await _start(reading, client, epochs)
    while (await reading.call(client, "wait_for_operation", {"operation_id": op}))[
        "status"
    ] not in FINAL:
        pass
    reading.decision = await reading.call(client, "analyze_loss", {"operation_id": op})
    return reading


async def until_end(client: Client, epochs: int) -> Reading:
    reading = Reading()
    op = await _start(reading, client, epochs)
    arguments = {"operation_id": op, "until": "end", "timeout_s": 55}
    while (await reading.call(client, "wait_for_operation", arguments))["status"] not in FINAL:
        pass
    reading.decision = await reading.call(client, "analyze_loss", {"operation_id": op})
    return reading


WORKFLOWS: dict[str, Callable[[Client, int], Awaitable[Reading]]] = {
    "documented: wait for decisions, then analyze_loss": documented,
    "naive: wait_for_operation(operation_id) to the end": naive,
    "wait_for_operation(until='end') to the end": until_end,
}


async def tools_list_bytes(client: Client) -> int:
    listed = await client.list_tools()
    wire = listed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(wire, separators=(",", ":")).encode())


def _server(data_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server.cli", "serve", "--data-dir", str(data_dir), "--log-level", "ERROR"],
        cwd=str(ROOT),
    )


async def main() -> None:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Client(_server(Path(tmp))) as client:
            size = await tools_list_bytes(client)
            rows.append(("tools/list", "-", f"{size:,} B", f"<= {TOOLS_LIST_BUDGET:,} B"))
            for epochs, budget in BUDGETS.items():
                for name, workflow in WORKFLOWS.items():
                    reading = await workflow(client, epochs)
                    verdict = f"{reading.decision['verdict']}/{reading.decision['recommendation']}"
                    rows.append(
                        (
                            f"{name}, {epochs} epochs",
                            f"{reading.calls} calls, {verdict}",
                            f"{reading.text_bytes:,} B",
                            f"<= {budget:,} B",
                        )
                    )
    header = ("workflow", "calls, decision", "text bytes", "budget")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    anyio.run(main)
