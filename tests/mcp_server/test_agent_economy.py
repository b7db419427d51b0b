"""Byte budgets of what an agent reads (the issue's figures, as tests of bytes, not time): the
documented workflow and the naive default loop follow a 100-epoch run and get its decision in
at most 15,000 bytes of tool text; tools/list stays within 20,000 bytes."""

from __future__ import annotations

import re

import pytest
from mcp import Client

from bench.agent_economy import BUDGETS, TOOLS_LIST_BUDGET, documented, naive, tools_list_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_tools_list_fits_its_budget(client: Client) -> None:
    assert await tools_list_bytes(client) <= TOOLS_LIST_BUDGET


@pytest.mark.parametrize("workflow", [documented, naive], ids=["documented", "naive"])
async def test_following_a_100_epoch_run_fits_the_budget_and_keeps_the_decision(
    client: Client, workflow: object
) -> None:
    assert callable(workflow)
    reading = await workflow(client, 100)
    assert reading.text_bytes <= BUDGETS[100]
    decision = reading.decision
    for key in ("best_epoch", "best_value", "epochs_since_improvement", "verdict"):
        assert decision[key] is not None, key
    assert decision["recommendation"] and 0 <= decision["confidence"] <= 1
    assert decision["reasons"] and all(re.search(r"\d", r) for r in decision["reasons"])


async def test_wait_answers_a_digest_and_the_history_only_when_asked(client: Client) -> None:
    started = await client.call_tool(
        "start_training", {"dataset": "blobs", "epochs": 3, "hidden_sizes": [8]}
    )
    assert started.structured_content is not None
    op = started.structured_content["operation_id"]
    plain = await client.call_tool(
        "wait_for_operation", {"operation_id": op, "until": "epochs", "epochs": 2}
    )
    assert plain.structured_content is not None
    assert plain.structured_content["metrics"] is None
    assert set(plain.structured_content["latest"]) >= {"train_loss", "val_loss"}
    text = plain.content[0].text  # type: ignore[union-attr]
    assert "\n" in text and "  " not in text  # a line, then compact JSON
    full = await client.call_tool(
        "wait_for_operation", {"operation_id": op, "until": "end", "include_history": True}
    )
    assert full.structured_content is not None
    series = {s["name"]: s for s in full.structured_content["metrics"]["series"]}
    assert series["train_loss"]["steps"][-1] == 3
