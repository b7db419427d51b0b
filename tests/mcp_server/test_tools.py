from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ImageContent

from tests.mcp_server.conftest import TINY
from tests.tool_calls import call_tool as _ok
from tests.tool_calls import tool_text as _text

pytestmark = pytest.mark.anyio


async def _finished_run(client: Client, **overrides: Any) -> str:
    started = await _ok(client, "start_training", {**TINY, **overrides})
    op = started["operation_id"]
    waited = await _ok(
        client, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55}
    )
    assert waited["reached"] and waited["status"] == "completed", waited
    return str(op)


async def test_every_tool_is_listed_with_truthful_annotations(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "start_training",
        "get_operation",
        "list_operations",
        "get_operation_metrics",
        "analyze_loss",
        "stop_training",
        "wait_for_operation",
        "compare_operations",
        "plot_metrics",
        "show_training",
        "dashboard_updates",  # the MCP App's view-only tool (hosts hide it from the model)
        "list_entry_points",
        "get_operation_logs",
        "fork_training",
        "resume_training",
        "start_sweep",
        "get_sweep",
        "enqueue_sweep_trial",
    }
    # What each hint means to a host: as listed, else MCP's default for a hint left out.
    defaults = {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": True}

    def hints(name: str) -> dict[str, bool]:
        annotations = tools[name].annotations
        listed = annotations.model_dump(by_alias=True, exclude_none=True) if annotations else {}
        return {**defaults, **listed}

    assert hints("get_operation")["readOnlyHint"] and hints("analyze_loss")["readOnlyHint"]
    stop = hints("stop_training")
    assert not stop["readOnlyHint"] and stop["destructiveHint"]
    start = hints("start_training")
    assert not start["readOnlyHint"] and not start["destructiveHint"]
    assert not any(hints(name)["openWorldHint"] for name in tools)  # nothing beyond this server
    for tool in tools.values():  # only what differs from the defaults is spelt out
        assert tool.annotations is not None, tool.name
        listed = tool.annotations.model_dump(by_alias=True, exclude_none=True)
        assert all(defaults.get(k) != v for k, v in listed.items()), (tool.name, listed)
    start_props = tools["start_training"].input_schema["properties"]
    assert {"dataset", "hidden_sizes", "epochs", "learning_rate", "spec"} <= set(start_props)
    assert not tools["start_training"].input_schema.get("required")


async def test_a_run_started_by_tool_trains_to_the_end_with_every_metric(client: Client) -> None:
    started = await _ok(client, "start_training", TINY)
    assert started["status"] == "queued"
    assert started["resources"]["metrics"].endswith(f"{started['operation_id']}/metrics")
    op = started["operation_id"]
    await _ok(client, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55})
    info = await _ok(client, "get_operation", {"operation_id": op})
    assert info["status"] == "completed" and info["epochs_done"] == 3 and info["device"] == "cpu"
    latest = {s["name"] for s in info["latest"]}
    assert {
        "train_loss",
        "val_loss",
        "train_accuracy",
        "val_accuracy",
        "learning_rate",
        "epoch_duration_s",
        "samples_per_s",
        "grad_norm",
    } <= latest
    metrics = await _ok(client, "get_operation_metrics", {"operation_id": op})
    series = {s["name"]: s for s in metrics["series"]}
    assert series["val_loss"]["steps"] == [1, 2, 3]
    assert series["val_loss"]["total_points"] == series["val_loss"]["returned_points"] == 3
    assert metrics["next_cursor"] == "e3"
    assert metrics["indicators"]["best_epoch"] in (1, 2, 3)


async def test_the_cursor_returns_only_what_is_new(client: Client) -> None:
    op = await _finished_run(client)
    first = await _ok(
        client,
        "get_operation_metrics",
        {"operation_id": op, "last_epochs": 1, "include_steps": True},
    )
    assert [s["steps"] for s in first["series"] if s["name"] == "train_loss"] == [[3]]
    again = await _ok(
        client, "get_operation_metrics", {"operation_id": op, "cursor": first["next_cursor"]}
    )
    assert all(s["returned_points"] == 0 for s in again["series"])
    bad = await client.call_tool("get_operation_metrics", {"operation_id": op, "cursor": "x"})
    assert bad.is_error and "cursor" in _text(bad)


async def test_unknown_ids_are_errors_that_name_the_id(client: Client) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_operation", {"operation_id": "op-missing"}),
        ("get_operation_metrics", {"operation_id": "op-missing"}),
        ("analyze_loss", {"operation_id": "op-missing"}),
        ("stop_training", {"operation_id": "op-missing"}),
        ("wait_for_operation", {"operation_id": "op-missing", "timeout_s": 1}),
    ]
    for tool, args in calls:
        result = await client.call_tool(tool, args)
        assert result.is_error, tool
        assert "op-missing" in _text(result), (tool, _text(result))


async def test_bad_specs_are_refused_naming_the_field(client: Client, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"epochs": 0}, "epochs"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"learning_rate": -1.0}, "learning_rate"),
        (
            {"dataset": "csv", "csv_path": str(tmp_path / "nope.csv"), "target_column": "y"},
            "dataset.path",
        ),
        ({"factory": "tests.trainer.factory_module:build"}, "factory"),
        ({"device": "cuda"}, "device"),
    ]
    for args, field in cases:
        result = await client.call_tool("start_training", args)
        assert result.is_error, args
        assert field in _text(result), (args, _text(result))
    listed = await _ok(client, "list_operations", {})
    assert listed["returned"] == 0


async def test_stop_training_cancels_a_long_run_and_keeps_its_epochs(client: Client) -> None:
    started = await _ok(client, "start_training", {**TINY, "epochs": 5000})
    op = started["operation_id"]
    await _ok(client, "wait_for_operation", {"operation_id": op, "until": "epochs", "epochs": 2})
    stopped = await _ok(client, "stop_training", {"operation_id": op, "reason": "enough"})
    assert stopped["status"] == "cancelled" and stopped["reason"] == "enough"
    assert stopped["epochs_done"] >= 2
    again = await client.call_tool("stop_training", {"operation_id": op})
    assert again.is_error and "already cancelled" in _text(again)


async def test_runs_beyond_the_limit_queue_and_a_queued_run_can_be_cancelled(
    client: Client,
) -> None:
    ids = [
        (await _ok(client, "start_training", {**TINY, "epochs": 5000}))["operation_id"]
        for _ in range(3)
    ]
    await _ok(client, "wait_for_operation", {"operation_id": ids[0], "until": "next_epoch"})
    queued = await _ok(client, "get_operation", {"operation_id": ids[2]})
    assert queued["status"] == "queued"
    cancelled = await _ok(client, "stop_training", {"operation_id": ids[2]})
    assert cancelled["status"] == "cancelled" and cancelled["epochs_done"] == 0
    for op in ids[:2]:
        await _ok(client, "stop_training", {"operation_id": op})


async def test_wait_for_operation_sends_progress_notifications(client: Client) -> None:
    started = await _ok(client, "start_training", {**TINY, "epochs": 4})
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool(
        "wait_for_operation",
        {"operation_id": started["operation_id"], "until": "end", "timeout_s": 55},
        progress_callback=on_progress,
    )
    assert not result.is_error
    assert seen and seen[-1][0] == 4.0 and seen[-1][1] == 4.0
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_analyze_loss_returns_a_verdict_and_echoes_its_parameters(client: Client) -> None:
    op = await _finished_run(client)
    digest = await _ok(client, "analyze_loss", {"operation_id": op, "patience": 7})
    assert "params" not in digest and "criteria" not in digest  # concise by default
    arguments = {"operation_id": op, "patience": 7, "detail": "full"}
    analysis = await _ok(client, "analyze_loss", arguments)
    assert analysis["epochs_analyzed"] == digest["epochs_analyzed"] == 3
    assert analysis["params"]["patience"] == 7
    assert analysis["verdict"] == digest["verdict"]
    assert analysis["verdict"] in (
        "too_early",
        "improving",
        "converged",
        "plateaued",
        "overfitting",
        "diverging",
    )
    assert analysis["reasons"]
    bad = await client.call_tool("analyze_loss", {"operation_id": op, "patience": -3})
    assert bad.is_error and "patience" in _text(bad)


async def test_compare_and_plot_two_runs(client: Client) -> None:
    a = await _finished_run(client)
    b = await _finished_run(client, learning_rate=0.05)
    comparison = await _ok(client, "compare_operations", {"operation_ids": [a, b]})
    assert [r["operation_id"] for r in comparison["runs"]] == [a, b]
    assert any(d["path"] == "learning_rate" for d in comparison["differences"])
    assert comparison["best_operation_id"] in (a, b)
    plot = await client.call_tool("plot_metrics", {"operation_ids": [a, b]})
    assert not plot.is_error
    images = [c for c in plot.content if isinstance(c, ImageContent)]
    assert images and images[0].mime_type == "image/png"
    assert "best" in _text(plot)
