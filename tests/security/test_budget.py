"""Finding 2: no resource budget. `hidden_sizes: [65536]*64` was accepted (202) and asked for a
17 GB allocation; `[8192]*4` wrote 4.6 GB of checkpoints never cleaned up; `n_samples: 10,000,000`
took 2.3 GB; the bridge the same. Replayed on real servers with the operator's limits set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from mcp_server.config import ServerConfig
from mcp_server.core.service import TrainingService, open_service
from tests.host_bridge.processes import Process, running
from tests.mcp_server.rest.support import live_server
from tests.security.conftest import bridge_process, serve_process
from trainer.checkpoint_budget import CheckpointBudget

pytestmark = pytest.mark.anyio

LIMITS = ["--max-dataset-rows", "100000", "--max-checkpoint-bytes", "1G"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    tmp = tmp_path_factory.mktemp("budget")
    server = serve_process(tmp, *LIMITS)
    bridge = bridge_process(tmp, *LIMITS)
    with running(server, bridge):
        yield server, bridge


def _refused(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    message: str = error["message"]
    return message


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"hidden_sizes": [65536] * 64}, "model.hidden_sizes", ["parameters", "--max-parameters"]),
        ({"hidden_sizes": [8192] * 4, "epochs": 1}, "model.hidden_sizes", ["limit of"]),
        (
            {"spec": {"dataset": {"kind": "synthetic", "n_samples": 10_000_000}}},
            "dataset.n_samples",
            ["10,000,000", "100,000", "--max-dataset-rows"],
        ),
    ],
)
def test_the_server_refuses_a_run_over_its_budget_before_accepting_it(
    limited: tuple[Process, Process], body: dict[str, object], field: str, words: list[str]
) -> None:
    api = f"{limited[0].url}/api/v1"
    message = _refused(httpx.post(f"{api}/operations", json=body), field)
    assert all(w in message for w in words), message
    assert "estimated at" in message
    assert httpx.get(f"{api}/operations").json()["operations"] == []


def test_the_bridge_refuses_a_session_over_its_budget(limited: tuple[Process, Process]) -> None:
    bridge = limited[1].url
    session = {
        "operation_id": "op-huge",
        "spec": {"model": {"hidden_sizes": [65536] * 64}},
        "server_url": "http://127.0.0.1:9",
    }
    message = _refused(httpx.post(f"{bridge}/sessions", json=session), "spec.model.hidden_sizes")
    assert "parameters estimated at" in message
    rows = {**session, "spec": {"dataset": {"kind": "synthetic", "n_samples": 10_000_000}}}
    _refused(httpx.post(f"{bridge}/sessions", json=rows), "spec.dataset.n_samples")
    assert httpx.get(f"{bridge}/sessions").json() == {"sessions": []}


def test_a_csv_too_long_for_the_budget_is_refused_naming_the_file(
    limited: tuple[Process, Process], tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = limited[0]
    root = Path(server.args[server.args.index("--data-root") + 1])
    (root / "long.csv").write_text("x,y\n" + "1,0\n" * 200_000)
    body = {"dataset": "csv", "csv_path": "long.csv", "target_column": "y"}
    message = _refused(httpx.post(f"{server.url}/api/v1/operations", json=body), "dataset.path")
    assert "dataset rows estimated at 200,000" in message


async def test_checkpoints_past_the_total_budget_are_pruned_when_a_run_ends(
    tmp_path: Path,
) -> None:
    """The 4.6 GB of checkpoints were never cleaned up: with a total budget, checkpoints that do
    not fit go, oldest first, once a run ends; the runs' stored metrics stay."""
    config = ServerConfig(
        data_dir=tmp_path, checkpoints=CheckpointBudget(per_run=None, total=64 * 1024)
    )
    tiny = {"dataset": "blobs", "epochs": 2, "hidden_sizes": [16], "batch_size": 64}
    big = {**tiny, "hidden_sizes": [128, 128]}  # about 400 KiB of checkpoints: over the total
    async with (
        open_service(config) as service,
        live_server(service) as base,
        httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as api,
    ):
        pruned = (await api.post("/operations", json=big)).json()["operation_id"]
        await _until_finished(service, pruned)
        kept = (await api.post("/operations", json=tiny)).json()["operation_id"]
        await _until_finished(service, kept)
        read = (await api.get(f"/operations/{pruned}/metrics")).json()
    # the server has stopped: every run's end, pruning included, is done
    assert read["epochs_done"] == 2
    assert not (config.artifacts_dir / pruned).exists()
    assert (config.artifacts_dir / kept / "last.pt").is_file()  # it fits


async def _until_finished(service: TrainingService, operation_id: str) -> None:
    with anyio.fail_after(60):
        while True:
            changed = service.changed(operation_id)
            op = await service.get_operation(operation_id)
            if op.finished:
                assert op.status.value == "completed", op
                return
            await changed.wait()
