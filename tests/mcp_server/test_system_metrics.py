"""System metrics of real runs through a real MCP client: a local run and a script run store
`system/...` series, which get_operation_metrics shows only when asked and the analysis reads
(GPU readings through the reader seam: no GPU here)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_server.config import ServerConfig
from mcp_server.core.models import StartTrainingArgs, WaitResult
from mcp_server.core.notify import Change
from mcp_server.core.queries import WaitQuery
from mcp_server.core.service import TrainingService, open_service
from mcp_server.server import build_mcp_server
from storage import latest_values
from tests.tool_calls import call_tool as _call
from training_mcp.points import system_points
from training_mcp.system import GpuReading

pytestmark = pytest.mark.anyio

TINY = {"dataset": "blobs", "epochs": 3, "hidden_sizes": [16], "batch_size": 64}
FAST = 0.05  # seconds between samples: tests see several samples within a short run


class FixedGpus:
    """What NVML would report on a GPU host: a device this process uses, nearly full."""

    def read(self) -> list[GpuReading]:
        return [GpuReading(0, 12.0, 79_000.0, 80_000.0, frozenset({os.getpid()}))]


@asynccontextmanager
async def _serve(config: ServerConfig) -> AsyncIterator[tuple[TrainingService, Client]]:
    async with open_service(config) as service, Client(build_mcp_server(service)) as client:
        yield service, client


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[TrainingService, Client]]:
    config = ServerConfig(
        data_dir=tmp_path / "data", system_interval_s=FAST, system_gpu=FixedGpus()
    )
    async with _serve(config) as pair:
        yield pair


async def _stored(service: TrainingService, op: str, name: str, above: float = 0.0) -> float:
    """Until `op` stores a value of `name` above `above` (woken by each change, never polling
    on a timer); that value."""
    with anyio.fail_after(60):
        while True:
            changed = service.changed(op)
            latest = {s.name: s.value for s in await latest_values(service._db, op) if s.count}
            value = latest.get(name)
            if value is not None and value > above:
                return value
            await changed.wait()


async def test_a_local_run_stores_system_series_shown_only_when_asked(
    served: tuple[TrainingService, Client],
) -> None:
    _, client = served
    before = time.time()
    op = (await _call(client, "start_training", TINY))["operation_id"]
    waited = await _call(
        client, "wait_for_operation", {"operation_id": op, "until": "end", "timeout_s": 55}
    )
    assert waited["status"] == "completed"

    default = await _call(client, "get_operation_metrics", {"operation_id": op})
    assert not [s for s in default["series"] if s["name"].startswith("system/")]
    assert default["available"][-1] == "system/"
    every = await _call(client, "get_operation_metrics", {"operation_id": op, "metrics": ["all"]})
    assert not [s for s in every["series"] if s["name"].startswith("system/")]
    info = await _call(client, "get_operation", {"operation_id": op})
    assert not [s for s in info["latest"] if s["name"].startswith("system/")]

    asked = await _call(
        client, "get_operation_metrics", {"operation_id": op, "metrics": ["system/"]}
    )
    series = {s["name"]: s for s in asked["series"]}
    assert {"system/cpu_percent", "system/rss_mb", "system/gpu_mem_percent"} <= series.keys()
    rss = series["system/rss_mb"]
    assert rss["total_points"] >= 1 and min(rss["values"]) > 10  # this process, torch loaded
    # Steps are the sample times in milliseconds.
    assert before * 1000 <= rss["steps"][0] <= rss["steps"][-1] <= time.time() * 1000
    cursor = asked["next_cursor"]
    assert f".t{rss['steps'][-1]}" in cursor
    newer = await _call(
        client,
        "get_operation_metrics",
        {"operation_id": op, "metrics": ["system/rss_mb"], "cursor": cursor},
    )
    assert newer["series"][0]["returned_points"] == 0

    # The GPU the run uses is 98.75% full: the analysis says so, with the figures.
    analysis = await _call(client, "analyze_loss", {"operation_id": op})
    (flag,) = [f for f in analysis["flags"] if f["name"] == "near_oom"]
    assert flag["evidence"] == "GPU memory 98.8% full (79000 MB)"
    assert any(r.startswith("Near out-of-memory: GPU memory 98.8%") for r in analysis["reasons"])


async def test_a_run_without_system_sampling_stores_none(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", system_interval_s=0)
    async with _serve(config) as (_, client):
        op = (await _call(client, "start_training", TINY))["operation_id"]
        await _call(client, "wait_for_operation", {"operation_id": op, "until": "end"})
        asked = await _call(
            client, "get_operation_metrics", {"operation_id": op, "metrics": ["system/"]}
        )
        assert asked["series"] == [] and asked["missing"] == ["system/"]
        assert "system/" not in asked["available"]


async def test_pushed_samples_of_a_starved_gpu_make_the_run_input_bound(
    served: tuple[TrainingService, Client],
) -> None:
    service, client = served
    started = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external", "epochs": 50})
    )
    op = started.operation_id
    t0 = time.time()
    for epoch in range(1, 6):
        await service.push_metrics(
            op,
            [
                {"name": "train_loss", "step": epoch, "value": 1.0 / epoch},
                {"name": "val_loss", "step": epoch, "value": 1.2 / epoch},
            ],
        )
    before = await _call(client, "analyze_loss", {"operation_id": op})
    assert "input_bound" not in {f["name"] for f in before["flags"]}
    heard: list[str] = []

    async def listen(change: Change) -> None:
        heard.append(change.kind)

    stop = service.on_change(listen)
    calm = {"cpu_percent": 100.0, "gpu_util": 90.0}
    await service.push_metrics(op, [p.to_json() for p in system_points(calm, at=t0, epoch=5)])
    assert heard == []  # a sample that changes no flag wakes waiters, tells no subscriber
    for i in range(1, 5):
        sample = {"cpu_percent": 100.0, "gpu_util": 4.0, "host_cpu_percent": 30.0}
        points = system_points(sample, at=t0 + i, epoch=5)
        await service.push_metrics(op, [p.to_json() for p in points])
    stop()
    assert heard == ["metrics"]  # input_bound raised: the analysis changed
    analysis = await _call(client, "analyze_loss", {"operation_id": op})
    (flag,) = [f for f in analysis["flags"] if f["name"] == "input_bound"]
    assert flag["since_epoch"] == 5
    assert "GPU utilisation 4% (median of 5 samples)" in flag["evidence"]


SCRIPT = """
import time
held = bytearray(48 * 2**20)  # resident: written below
for i in range(0, len(held), 4096):
    held[i] = 1
print("holding", flush=True)
while True:
    time.sleep(0.02)  # the script's own pace; the test stops it
"""


async def test_a_script_run_is_sampled_by_the_server_as_a_whole_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    (tmp_path / "hold.py").write_text(textwrap.dedent(SCRIPT))
    declared = tmp_path / "entry_points.toml"
    declared.write_text('[entry_points.hold]\ncommand = ["python", "hold.py"]\n')
    config = ServerConfig(
        data_dir=tmp_path / "data",
        public_url="http://127.0.0.1:9",  # the script pushes nothing
        entry_points_file=declared,
        system_interval_s=FAST,
        system_gpu=None,
    )
    async with _serve(config) as (service, client):
        op = (await _call(client, "start_training", {"entry_point": "hold"}))["operation_id"]
        # The script's 48 MB, once it has written them, and its CPU time.
        assert await _stored(service, op, "system/rss_mb", above=48) > 48
        await _stored(service, op, "system/cpu_percent", above=-1)
        asked = await _call(
            client, "get_operation_metrics", {"operation_id": op, "metrics": ["system/"]}
        )
        assert {s["name"] for s in asked["series"]} >= {"system/cpu_percent", "system/rss_mb"}
        stopped = await _call(client, "stop_training", {"operation_id": op})
        assert stopped["status"] == "cancelled"


async def test_a_wait_for_a_decision_wakes_when_a_system_sample_raises_a_flag(
    served: tuple[TrainingService, Client],
) -> None:
    service, _ = served
    started = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external"})
    )
    op = started.operation_id
    for epoch in range(1, 4):
        await service.push_metrics(op, [{"name": "train_loss", "step": epoch, "value": 1 / epoch}])
    waiting = anyio.Event()

    async def progress(done: float, total: float | None, message: str) -> None:
        waiting.set()  # the wait has read the analysis it compares against

    results: list[WaitResult] = []

    async def wait() -> None:
        results.append(
            await service.wait_for_operation(op, WaitQuery(timeout_s=30), progress=progress)
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        with anyio.fail_after(30):
            await waiting.wait()
        full = {"mem_percent": 96.5, "rss_mb": 3_000.0}
        await service.push_metrics(
            op, [p.to_json() for p in system_points(full, at=time.time(), epoch=3)]
        )
    (result,) = results
    assert (result.woke, result.epochs_done) == ("decision", 3)
    assert result.changes == ["flag near_oom since epoch 3"]
