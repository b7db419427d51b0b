"""A real server killed with SIGKILL in the middle of a local run, restarted with
`--resume-interrupted`: the run completes in the same operation with every epoch exactly once."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.host_bridge.processes import poll_until, running, server

EPOCHS = 20
# Slow enough per epoch (many small batches) that the kill lands mid-run, still a few seconds.
SPEC = {
    "dataset": "blobs",
    "hidden_sizes": [16],
    "epochs": EPOCHS,
    "batch_size": 4,
    "spec": {"torch_threads": 1, "dataset": {"name": "blobs", "n_samples": 1000}},
}


def _op(base: str, operation_id: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{base}/api/v1/operations/{operation_id}").json()
    return body


def _epochs_done(base: str, operation_id: str) -> int:
    return int(str(_op(base, operation_id)["epochs_done"]))


def test_a_run_killed_with_the_server_resumes_on_restart_with_each_epoch_once(
    tmp_path: Path,
) -> None:
    first = server(tmp_path, [])
    with running(first):
        started = httpx.post(f"{first.url}/api/v1/operations", json=SPEC)
        assert started.status_code == 202, started.text
        operation_id = started.json()["operation_id"]
        poll_until(lambda: _epochs_done(first.url, operation_id) >= 2, 60, first)
        first.stop(kill=True)
    # the first server is gone without a word; its database and checkpoints stay on disk
    second = server(tmp_path, [], port=int(first.url.rsplit(":", 1)[1]))
    second.args += ["--resume-interrupted"]
    with running(second):
        poll_until(lambda: _op(second.url, operation_id)["status"] == "completed", 120, second)
        op = _op(second.url, operation_id)
        assert op["epochs_done"] == EPOCHS and op["error"] is None
        assert "resumed from the checkpoint of epoch" in str(op["reason"])
        metrics = httpx.get(
            f"{second.url}/api/v1/operations/{operation_id}/metrics",
            params={"metrics": "train_loss,val_loss", "max_points": 1000},
        ).json()
        for series in metrics["series"]:
            assert series["steps"] == list(range(1, EPOCHS + 1)), series["name"]
            assert series["total_points"] == EPOCHS
