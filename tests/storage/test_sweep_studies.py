"""A sweep's Optuna study lives in the server's own database, SQLite or PostgreSQL: Optuna's sync
engine on a URL derived from the server's async one (psycopg for asyncpg), real trainings."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from mcp_server.core.sweep_space import SweepRequest
from mcp_server.core.sweeps import optuna_url

pytest.importorskip("optuna")
pytestmark = pytest.mark.anyio

REQUEST = {
    "base": {
        "dataset": "blobs",
        "hidden_sizes": [8],
        "epochs": 3,
        "log_every_n_steps": 0,
        "spec": {"torch_threads": 1, "dataset": {"name": "blobs", "n_samples": 200}},
    },
    "space": {"learning_rate": {"low": 1e-3, "high": 0.3, "log": True}},
    "trials": 3,
    "parallel": 1,
    "sampler": "random",
    "pruner": "none",
    "seed": 7,
}


def test_the_sync_url_keeps_the_server_and_swaps_the_driver() -> None:
    url = optuna_url("postgresql+asyncpg://u:p%40ss@127.0.0.1:5433/db")
    assert url == "postgresql+psycopg://u:p%40ss@127.0.0.1:5433/db"
    assert optuna_url("sqlite+aiosqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert optuna_url("sqlite+aiosqlite:///:memory:") is None


async def test_a_sweep_runs_and_is_read_back_after_a_restart(db_url: str, tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,), db_url=db_url)
    async with open_service(config) as service:
        sweep_id = (await service.start_sweep(SweepRequest.model_validate(REQUEST))).sweep_id
        with anyio.fail_after(120):
            while (sweep := await service.get_sweep(sweep_id)).status == "running":
                changed = service.changed(sweep_id)
                with anyio.move_on_after(5):
                    await changed.wait()
    assert sweep.counts == {"complete": 3}
    async with open_service(config) as service:  # the study is in that database
        again = await service.get_sweep(sweep_id)
        best = await service.get_operation(again.best_operation_id or "")
    assert again.status == "completed" and again.counts == {"complete": 3}
    assert again.best_value == sweep.best_value and best.tags["sweep"] == sweep_id
