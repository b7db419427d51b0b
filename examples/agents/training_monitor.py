"""Watch a training run epoch by epoch through a real MCP client.

Spawns `training-mcp serve` over stdio, starts a run (or follows --operation-id), subscribes to
the run's metrics resource and prints each epoch the moment its notification arrives.

    python examples/agents/training_monitor.py --dataset noisy_spirals --epochs 10
    python examples/agents/training_monitor.py --operation-id op-k3f9x2ab
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import TextResourceContents


def server_params(data_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "mcp_server.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
        ],
    )


def _fmt(value: float | None) -> str:
    return "   -   " if value is None else f"{value:7.4f}"


def print_epochs(metrics: dict[str, Any]) -> None:
    """Print one line per epoch present in a get_operation_metrics result."""
    by_name = {
        s["name"]: dict(zip(s["steps"], s["values"], strict=True)) for s in metrics["series"]
    }
    epochs = sorted({e for values in by_name.values() for e in values})
    for epoch in epochs:
        row = [
            by_name.get(n, {}).get(epoch)
            for n in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate")
        ]
        print(
            f"epoch {epoch:3d}  train_loss {_fmt(row[0])}  val_loss {_fmt(row[1])}  "
            f"train_acc {_fmt(row[2])}  val_acc {_fmt(row[3])}  lr {_fmt(row[4])}",
            flush=True,
        )


async def monitor(args: argparse.Namespace) -> str:
    async with Client(server_params(args.data_dir)) as client:
        if args.operation_id:
            operation_id = args.operation_id
        else:
            start = {"dataset": args.dataset, "epochs": args.epochs}
            result = await client.call_tool("start_training", start)
            if result.is_error:
                raise SystemExit(f"start_training failed: {result.content}")
            assert result.structured_content is not None
            operation_id = result.structured_content["operation_id"]
            print(f"started {operation_id}: {args.epochs} epochs on {args.dataset}", flush=True)
        metrics_uri = f"training://operations/{operation_id}/metrics"
        async with client.listen(resource_subscriptions=[metrics_uri]) as events:
            metrics = await _read_json(client, metrics_uri)  # as any subscriber would read it
            if not any(s["steps"] for s in metrics["series"]):
                print(f"{operation_id} is {metrics['status']}: no metrics yet", flush=True)
            while True:
                print_epochs(metrics)
                if metrics["status"] not in ("queued", "running"):
                    break
                with anyio.move_on_after(30):
                    await events.__anext__()  # the next resources/updated for this run
                reply = await client.call_tool(
                    "get_operation_metrics",
                    {"operation_id": operation_id, "cursor": metrics["next_cursor"]},
                )
                metrics = reply.structured_content or {}
        final = await client.call_tool("get_operation", {"operation_id": operation_id})
        op = final.structured_content or {}
        note = op.get("reason") or op.get("error") or ""
        print(
            f"{operation_id} {op.get('status')} after {op.get('epochs_done')} epochs {note}",
            flush=True,
        )
        return str(operation_id)


async def _read_json(client: Client, uri: str) -> dict[str, Any]:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    data: dict[str, Any] = json.loads(content.text)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--operation-id")
    parser.add_argument("--dataset", default="noisy_spirals")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    anyio.run(monitor, parser.parse_args())


if __name__ == "__main__":
    main()
