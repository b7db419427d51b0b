"""Judge a training run through a real MCP client: trend, flags, verdict and recommendation.

Spawns `training-mcp serve` over stdio and calls analyze_loss on a run (by default the newest),
waiting for it to finish first with --wait.

    python examples/agents/loss_analyzer.py
    python examples/agents/loss_analyzer.py --operation-id op-k3f9x2ab --wait
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).parent))
from training_monitor import server_params


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise SystemExit(f"{tool} failed: {text}")
    return result.structured_content or {}


def report(analysis: dict[str, Any]) -> None:
    """Print analyze_loss's default answer: the decision and the numbers behind it."""
    print(f"monitor {analysis['monitor']}, {analysis['epochs_analyzed']} epochs analysed")
    print(
        f"best epoch {analysis['best_epoch']} ({analysis['best_value']}), "
        f"{analysis['epochs_since_improvement']} epochs since improvement"
    )
    for flag in analysis["flags"]:
        print(f"flag {flag['name']} since epoch {flag['since_epoch']}: {flag['evidence']}")
    for name, epoch in analysis["fired"].items():
        print(f"criterion {name}: fired at epoch {epoch}")
    print(f"verdict: {analysis['verdict']}")
    print(f"recommendation: {analysis['recommendation']} (confidence {analysis['confidence']:.2f})")
    for reason in analysis["reasons"]:
        print(f"  - {reason}")


async def analyze(args: argparse.Namespace) -> None:
    async with Client(server_params(args.data_dir)) as client:
        operation_id = args.operation_id
        if operation_id is None:
            runs = await _call(client, "list_operations", {"limit": 1})
            if not runs["operations"]:
                raise SystemExit("no runs yet: start one with start_training")
            operation_id = runs["operations"][0]["operation_id"]
        while args.wait:  # digests only when a decision changes, so waiting stays cheap
            waited = await _call(client, "wait_for_operation", {"operation_id": operation_id})
            if waited["status"] not in ("queued", "running"):
                break
        op = await _call(client, "get_operation", {"operation_id": operation_id})
        print(
            f"{operation_id} '{op['name']}': {op['status']}, "
            f"{op['epochs_done']}/{op['epochs_total']} epochs"
        )
        report(await _call(client, "analyze_loss", {"operation_id": operation_id}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--operation-id")
    parser.add_argument("--wait", action="store_true", help="wait for the run to end first")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    anyio.run(analyze, parser.parse_args())


if __name__ == "__main__":
    main()
