"""Fork and resume for bridge runs, with a real server and a real bridge on loopback (CPU): the
checkpoints are the bridge's, so the server asks it which it holds and starts the fork or the
resume there with `start_from`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.host_bridge import processes
from tests.host_bridge.processes import Process, poll_until
from tests.host_bridge.test_bridge_live import API, TOKEN, _epochs, _get, _operation, _start

pytestmark = pytest.mark.slow

SPEC = {"dataset": {"kind": "synthetic", "name": "noisy_spirals", "n_samples": 600}}
RUN = {"spec": SPEC, "hidden_sizes": [64, 64], "learning_rate": 0.01, "batch_size": 64}


def _post(url: str, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {TOKEN}"}
    return httpx.post(url, json=body or {}, headers=headers, timeout=30)


def _values(server: Process, operation_id: str, name: str) -> dict[int, float]:
    metrics = _get(f"{server.url}{API}/{operation_id}/metrics", metrics=name, max_points=10_000)
    (series,) = metrics["series"]
    return dict(zip(series["steps"], series["values"], strict=True))


def _ended(server: Process, operation_id: str) -> dict[str, Any]:
    poll_until(lambda: _operation(server, operation_id)["status"] != "running", 90, server)
    return _operation(server, operation_id)


def test_a_bridge_run_forks_on_its_bridge_from_the_checkpoint_the_bridge_holds(
    tmp_path: Path,
) -> None:
    bridge = processes.bridge(tmp_path, TOKEN)
    server = processes.server(tmp_path, [(bridge.url, TOKEN)])
    with processes.running(bridge, server):
        parent = _start(server, {**RUN, "epochs": 8, "device": "cpu", "backend": "bridge"})
        assert _ended(server, parent)["status"] == "completed"
        held = _get(f"{bridge.url}/sessions/{parent}/checkpoints")
        assert held["last"] == 8 and held["best"] in held["epochs"]
        best = held["best"]

        missing = _post(f"{server.url}{API}/{parent}/fork", {"from_epoch": 99})
        assert missing.status_code == 422, missing.text
        message = missing.json()["error"]["message"]
        assert "no checkpoint for epoch 99" in message and f"{best} (best" in message
        assert "its bridge keeps" in message

        forked = _post(
            f"{server.url}{API}/{parent}/fork",
            {"from_epoch": "best", "changes": {"learning_rate": 0.001, "epochs": 3}},
        )
        assert forked.status_code == 202, forked.text
        child = forked.json()["operation_id"]
        assert forked.json()["backend"] == "bridge"
        op = _ended(server, child)
        assert (op["status"], op["epochs_done"], op["bridge_url"]) == (
            "completed",
            best + 3,
            bridge.url,
        )
        assert op["lineage"]["parent_id"] == parent and op["lineage"]["from_epoch"] == best
        assert _get(f"{bridge.url}/sessions/{child}")["status"] == "completed"

        parent_val = _values(server, parent, "val_loss")
        child_val = _values(server, child, "val_loss")
        assert sorted(child_val) == list(range(1, best + 4))  # the parent's start, then its own
        assert all(child_val[e] == parent_val[e] for e in range(1, best + 1))
        assert _values(server, child, "learning_rate")[best + 1] == pytest.approx(0.001)

        # The bridge itself refuses a start from a checkpoint it does not hold, naming its own.
        refused = _post(
            f"{bridge.url}/sessions",
            {
                "operation_id": "not-a-fork",
                "spec": {**SPEC, "epochs": 10},
                "server_url": server.url,
                "start_from": {"operation_id": parent, "epoch": 99},
            },
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "start_from.epoch"
        assert "1, 2, 3" in refused.json()["error"]["message"]


EPOCHS = 40
# 3000 samples: tens of ms per epoch, so the kill falls inside the run.
LONGER = {**RUN, "spec": {"dataset": {**SPEC["dataset"], "n_samples": 3000}}, "epochs": EPOCHS}


@contextmanager
def _bridge_killed_mid_run(
    tmp_path: Path, *server_args: str
) -> Iterator[tuple[Process, Process, str]]:
    """A server and a bridge (on a port it keeps), a run killed with its bridge after 3 epochs
    and failed `bridge lost`: (bridge, stopped; server; the run's id)."""
    bridge = processes.bridge(tmp_path, TOKEN, port=processes.free_port())
    server = processes.server(tmp_path, [(bridge.url, TOKEN)], heartbeat_timeout_s=2.0)
    server.args += list(server_args)
    with processes.running(bridge, server):
        operation_id = _start(server, {**LONGER, "device": "cpu", "backend": "bridge"})
        poll_until(lambda: _operation(server, operation_id)["epochs_done"] >= 3, 60, server)
        bridge.stop(kill=True)
        failed = _ended(server, operation_id)
        assert (failed["status"], failed["reason"]) == ("failed", "bridge lost")
        assert failed["epochs_done"] < EPOCHS
        yield bridge, server, operation_id


def _each_epoch_once(server: Process, operation_id: str) -> None:
    for name in ("train_loss", "val_loss", "learning_rate"):
        assert _epochs(server, operation_id, name) == (list(range(1, EPOCHS + 1)), EPOCHS)


def test_a_bridge_run_whose_bridge_was_killed_resumes_there_with_each_epoch_once(
    tmp_path: Path,
) -> None:
    with _bridge_killed_mid_run(tmp_path) as (bridge, server, operation_id):
        away = _post(f"{server.url}{API}/{operation_id}/resume")
        assert away.status_code == 503, away.text  # the bridge is down: nothing to ask

        bridge.start().wait_ready()  # the same bridge, its data dir and port
        # On start the bridge tells the server how the killed session ended; a resume waits for
        # that (the bridge answers 409 while it is delivering).
        poll_until(lambda: _get(f"{bridge.url}/sessions/{operation_id}")["delivered"], 30, bridge)
        resumed = _post(f"{server.url}{API}/{operation_id}/resume")
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["operation_id"] == operation_id
        op = _ended(server, operation_id)
        assert (op["status"], op["error"], op["epochs_done"]) == ("completed", None, EPOCHS)
        _each_epoch_once(server, operation_id)
        session = _get(f"{bridge.url}/sessions/{operation_id}")
        assert (session["status"], session["epochs_done"]) == ("completed", EPOCHS)

        again = _post(f"{server.url}{API}/{operation_id}/resume")
        assert again.status_code == 409  # completed: nothing to resume


def test_with_resume_interrupted_a_run_its_bridge_lost_resumes_there_once_the_bridge_is_back(
    tmp_path: Path,
) -> None:
    killed = _bridge_killed_mid_run(tmp_path, "--resume-interrupted")
    with killed as (bridge, server, operation_id):
        bridge.start().wait_ready()  # the same bridge, its data dir and port: nothing asked

        def ended_again() -> bool:  # resumed (queued, then running on the bridge), then ended
            op = _operation(server, operation_id)
            return op["reason"] != "bridge lost" and op["status"] not in ("queued", "running")

        poll_until(ended_again, 120, server)
        op = _operation(server, operation_id)
        assert (op["status"], op["error"], op["epochs_done"]) == ("completed", None, EPOCHS), op
        assert op["reason"].startswith("resumed from the checkpoint of epoch"), op
        _each_epoch_once(server, operation_id)
