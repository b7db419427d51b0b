"""`training_mcp.history`: a run's whole history read back through the real server on loopback."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from mcp_server.core.service import TrainingService
from tests.mcp_server.rest.support import live_server
from training_mcp.history import HistoryError, _arrow_frame, _csv_frame, history, to_pandas

pytestmark = pytest.mark.anyio


def _value(step: int) -> float:
    specials = {997: math.nan, 1999: math.inf, 2999: -math.inf}
    for every, special in specials.items():
        if step and step % every == 0:
            return special
    return 1.0 / (step + 1)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.fixture
async def run(service: TrainingService) -> AsyncIterator[tuple[str, str]]:
    """A server with an external run of 25,000 val_loss points and 3 train_loss points."""
    async with (
        live_server(service) as base,
        httpx.AsyncClient(base_url=base + "/api/v1", timeout=30) as http,
    ):
        started = await http.post("/operations", json={"backend": "external"})
        op: str = started.json()["operation_id"]
        points = [
            {"name": "val_loss", "step": s, "epoch": s, "value": _value(s)} for s in range(25_000)
        ]
        points += [{"name": "train_loss", "step": s, "value": 1.0 / s} for s in (1, 2, 3)]
        for start in range(0, len(points), 10_000):
            body = json.dumps({"points": points[start : start + 10_000]})  # NaN tokens
            pushed = await http.post(
                f"/operations/{op}/metrics",
                content=body,
                headers={
                    "content-type": "application/json",
                    "X-Training-Push-Token": started.json()["push_token"],  # the run's source
                },
            )
            assert pushed.status_code == 200, pushed.text
        yield base, op


async def test_history_returns_every_point_exactly_nan_and_infinities_included(
    run: tuple[str, str],
) -> None:
    base, op = run
    rows = await anyio.to_thread.run_sync(lambda: history(base, op))
    only = await anyio.to_thread.run_sync(lambda: history(base, op, metrics=["train_loss"]))
    assert [(r.name, r.step) for r in rows[:3]] == [("train_loss", s) for s in (1, 2, 3)]
    val = rows[3:]
    assert [r.step for r in val] == list(range(25_000))
    assert all(_same(r.value, _value(r.step)) and r.epoch == r.step for r in val)
    assert [r.value for r in only] == [1.0, 0.5, 1.0 / 3] and only[0].epoch is None


async def test_to_pandas_gives_the_same_points_as_a_dataframe(run: tuple[str, str]) -> None:
    pytest.importorskip("pandas")
    base, op = run
    frame = await anyio.to_thread.run_sync(lambda: to_pandas(base, op, metrics=["val_loss"]))
    assert list(frame.columns) == ["name", "step", "epoch", "value", "wall_time"]
    assert frame["step"].tolist() == list(range(25_000))
    assert all(_same(v, _value(s)) for s, v in zip(frame["step"], frame["value"], strict=True))
    assert str(frame["epoch"].dtype) == "Int64"


async def test_the_arrow_and_csv_frames_are_the_same(run: tuple[str, str]) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    base, op = run
    arrow = await anyio.to_thread.run_sync(lambda: _arrow_frame(base, op, None, None, None, 30))
    csv = await anyio.to_thread.run_sync(lambda: _csv_frame(base, op, None, None, None, 30))
    assert len(arrow) == 25_003
    pd.testing.assert_frame_equal(arrow, csv)


async def test_a_refused_read_raises_with_the_servers_code(run: tuple[str, str]) -> None:
    base, _ = run
    with pytest.raises(HistoryError) as caught:
        await anyio.to_thread.run_sync(lambda: history(base, "op-missing"))
    assert (caught.value.status, caught.value.code) == (404, "not_found")


async def test_an_export_that_breaks_off_half_way_raises_and_returns_nothing_partial(
    run: tuple[str, str], service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, op = run
    export = service.export_metrics

    async def breaks_off(operation_id: str, query: Any) -> AsyncIterator[bytes]:
        stream = await export(operation_id, query)

        async def parts() -> AsyncIterator[bytes]:
            async for part in stream:
                yield part
                raise RuntimeError("the reader died")  # after the first part went out

        return parts()

    monkeypatch.setattr(service, "export_metrics", breaks_off)
    readers = [lambda: history(base, op)]
    if importlib.util.find_spec("pandas") is not None:
        readers.append(lambda: to_pandas(base, op))
    for read in readers:
        with pytest.raises(HistoryError) as caught:
            await anyio.to_thread.run_sync(read)
        assert caught.value.code == "export_interrupted" and op in str(caught.value)
    monkeypatch.setattr(service, "export_metrics", export)
    rows = await anyio.to_thread.run_sync(lambda: history(base, op))  # the server goes on
    assert len(rows) == 25_003
