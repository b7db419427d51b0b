"""Sweeps on Optuna with real trainings on CPU: a 12-trial Hyperband sweep prunes some trials and
ranks the rest; a sweep survives a server restart; an agent's own trial is trained; bad spaces are
refused naming the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.config import ServerConfig
from mcp_server.core.errors import InvalidInputError
from mcp_server.core.queries import MetricsQuery
from mcp_server.core.service import TrainingService, open_service
from mcp_server.core.sweep_space import SweepRequest
from tests.mcp_server.rest.support import asgi_client
from tests.mcp_server.sweep_wait import until_sweep_done

pytest.importorskip("optuna")
pytestmark = pytest.mark.anyio

BASE: dict[str, Any] = {
    "dataset": "blobs",
    "hidden_sizes": [16],
    "epochs": 9,
    "batch_size": 64,
    "log_every_n_steps": 0,
    "spec": {"torch_threads": 1, "dataset": {"name": "blobs", "n_samples": 300}},
}
SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 0.3, "log": True},
    "batch_size": {"choices": [32, 64, 128]},
}


async def test_a_12_trial_hyperband_sweep_prunes_some_trials_and_ranks_the_rest(
    client: Client, service: TrainingService
) -> None:
    started = await client.call_tool(
        "start_sweep",
        {"base": BASE, "space": SPACE, "trials": 12, "parallel": 2, "seed": 3},
    )
    assert not started.is_error, started.content
    assert started.structured_content is not None
    sweep_id = started.structured_content["sweep_id"]
    sweep = await until_sweep_done(service, sweep_id, 240)

    assert sweep.status == "completed"
    assert sweep.counts.get("complete", 0) + sweep.counts.get("pruned", 0) == 12
    assert sweep.counts.get("pruned", 0) >= 1
    assert sweep.leaderboard and sweep.leaderboard[0].state == "complete"
    assert set(sweep.importances) == {"learning_rate", "batch_size"}
    assert sweep.best_operation_id == sweep.leaderboard[0].operation_id
    best = await service.get_operation(sweep.best_operation_id or "")
    assert best.tags["sweep"] == sweep_id and best.status.value == "completed"
    stopped = [
        await service.get_operation(e.operation_id or "")
        for e in sweep.leaderboard
        if e.state == "pruned"
    ]
    assert all("pruned by Optuna's hyperband pruner" in (op.reason or "") for op in stopped)
    read = await client.read_resource(f"training://sweeps/{sweep_id}")
    assert sweep_id in read.contents[0].text  # type: ignore[union-attr]


async def test_a_sweep_survives_a_server_restart_and_trains_an_agents_own_trial(
    tmp_path: Path,
) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,))
    request = SweepRequest.model_validate(
        {"base": {**BASE, "epochs": 4}, "space": SPACE, "trials": 4, "parallel": 1,
         "pruner": "none", "sampler": "random", "seed": 1}
    )  # fmt: skip
    async with open_service(config) as service:
        sweep_id = (await service.start_sweep(request)).sweep_id
        with pytest.raises(InvalidInputError, match="outside the space"):
            await service.enqueue_sweep_trial(sweep_id, {"learning_rate": 5.0, "batch_size": 32})
        await service.enqueue_sweep_trial(sweep_id, {"learning_rate": 0.01, "batch_size": 32})
        with anyio.fail_after(120):
            while (await service.get_sweep(sweep_id)).counts.get("complete", 0) < 1:
                changed = service.changed(sweep_id)
                with anyio.move_on_after(5):
                    await changed.wait()
    # the server stopped mid-sweep; a new one picks the sweep up from the same database
    async with open_service(config) as service:
        sweep = await until_sweep_done(service, sweep_id, 240)
    assert sweep.status == "completed"
    assert sweep.counts == {"complete": 4}
    params = [e.params for e in sweep.leaderboard]
    assert {"learning_rate": 0.01, "batch_size": 32} in params


@pytest.mark.parametrize(
    ("space", "field", "words"),
    [
        ({"learning_rate": {"low": 0, "high": 0.1, "log": True}}, "space.learning_rate", "log"),
        ({"learning_rate": {"low": 1e-3, "high": 1000.0}}, "space.learning_rate", "100"),
        ({"batch_size": {"choices": []}}, "space.batch_size", "at least one choice"),
        ({"dropout": {"low": 0.5, "high": 0.1}}, "space.dropout", "must be below"),
        ({"tags": {"choices": [{}]}}, "space.tags", "not a parameter"),
    ],
)
async def test_a_bad_search_space_is_refused_naming_the_parameter(
    service: TrainingService, space: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidInputError, match=words) as info:
        await service.start_sweep(SweepRequest.model_validate({"space": space}))
    assert (info.value.field or "").startswith(field)


async def test_the_rest_mirror_refuses_out_of_bounds_trials_and_reads_no_such_sweep(
    service: TrainingService,
) -> None:
    async with asgi_client(service) as http:
        bad = await http.post("/api/v1/sweeps", json={"space": SPACE, "trials": 0})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "trials"
        many = await http.post("/api/v1/sweeps", json={"space": SPACE, "parallel": 99})
        assert many.status_code == 422 and many.json()["error"]["field"] == "parallel"
        missing = await http.get("/api/v1/sweeps/sw-00000000")
        assert missing.status_code == 404


async def test_the_analysis_pruner_stops_an_overfitting_trial_with_the_analysis_reason(
    service: TrainingService,
) -> None:
    # The demo set with a big model and a long budget: val_loss turns up after a few epochs,
    # and the analysis says to stop long before the budget is spent.
    base = {
        "dataset": "noisy_spirals",
        "hidden_sizes": [128, 128],
        "epochs": 40,
        "log_every_n_steps": 0,
        "spec": {"torch_threads": 1},
    }
    request = SweepRequest.model_validate(
        {"base": base, "space": {"learning_rate": {"choices": [0.003, 0.01]}}, "trials": 2,
         "parallel": 2, "sampler": "grid", "pruner": "analysis", "seed": 0}
    )  # fmt: skip
    sweep_id = (await service.start_sweep(request)).sweep_id
    sweep = await until_sweep_done(service, sweep_id, 240)

    assert sweep.status == "completed" and sweep.counts.get("pruned", 0) >= 1, sweep.counts
    for entry in (e for e in sweep.leaderboard if e.state == "pruned"):
        op = await service.get_operation(entry.operation_id or "")
        assert op.status.value == "cancelled" and op.epochs_done < 40
        prefix = f"pruned by the analysis at epoch {entry.epochs}: "
        assert (op.reason or "").startswith(prefix), op.reason
        # the reason is the analysis' own, for the epochs it had seen
        history = await service.get_metrics(
            op.operation_id, MetricsQuery(metrics=["val_loss"], max_points=1000)
        )
        assert history.series[0].steps[-1] >= (entry.epochs or 0)
        assert len((op.reason or "")[len(prefix) :]) > 20
