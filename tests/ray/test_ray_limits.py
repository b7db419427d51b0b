"""Ray runs under the server's limits and declarations, against the same real cluster: they hold
slots of `--max-concurrent-runs` with local runs (past it they wait `queued`, with no actor, in
order), a sweep whose base says backend 'ray' trains its trials there under that limit, and a
declared entry point runs as a process inside an actor: pushing with its own credential, stopped
through its process group, its exit code its status."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.host_bridge.processes import Process, poll_until
from tests.ray.cluster import Cluster
from tests.ray.runs import (
    API,
    ENDLESS,
    SMALL,
    TINY,
    actor_gone,
    assert_only_the_worker_pushes,
    cancel,
    operation,
    ray_server,
    start_run,
    stored_steps,
)

pytestmark = pytest.mark.slow


def test_ray_runs_share_the_concurrency_limit_with_local_runs_and_sweep_trials(
    tmp_path: Path, cluster: Cluster
) -> None:
    server = ray_server(tmp_path, cluster, "--max-concurrent-runs", "1").start()
    try:
        server.wait_ready()
        first = start_run(server, {**ENDLESS, **SMALL})
        poll_until(lambda: operation(server, first)["epochs_done"] >= 1, 60, server)
        # The one slot is the Ray run's: a local run and a Ray run wait for it, in order.
        local = httpx.post(server.url + API, json={**TINY, "epochs": 2}, timeout=30).json()
        assert (local["backend"], local["status"]) == ("local", "queued")
        waiting = start_run(server, {**TINY, **SMALL, "epochs": 3})
        dropped = start_run(server, {**TINY, **SMALL, "epochs": 3})
        sweep = httpx.post(
            server.url + "/api/v1/sweeps",
            json={
                "base": {**TINY, **SMALL, "epochs": 3, "backend": "ray"},
                "space": {"learning_rate": {"low": 0.01, "high": 0.1, "log": True}},
                "trials": 2,
                "parallel": 2,
                "sampler": "random",
                "pruner": "none",
                "seed": 0,
            },
            timeout=30,
        )
        assert sweep.status_code == 202, sweep.text
        sweep_id = sweep.json()["sweep_id"]
        assert operation(server, local["operation_id"])["status"] == "queued"
        for queued in (waiting, dropped):
            assert operation(server, queued)["status"] == "queued"
            assert actor_gone(cluster, queued)  # no actor holds cluster resources for it yet
        stopped = cancel(server, dropped, "not needed")  # a run queued for a slot: cancelled
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "not needed")
        cancel(server, first, "make room")

        def sweep_state() -> dict[str, Any]:
            response = httpx.get(f"{server.url}/api/v1/sweeps/{sweep_id}", timeout=10)
            response.raise_for_status()
            state: dict[str, Any] = response.json()
            return state

        poll_until(lambda: sweep_state()["status"] == "completed", 120, server)
        done = sweep_state()
        assert done["counts"] == {"complete": 2}, done
        trials = [e["operation_id"] for e in done["leaderboard"]]
        ran = [operation(server, oid) for oid in (first, local["operation_id"], waiting, *trials)]
        for op in ran[1:]:
            assert (op["status"], op["epochs_done"], op["error"]) == (
                "completed",
                op["epochs_total"],
                None,
            )
        assert [op["backend"] for op in ran] == ["ray", "local", "ray", "ray", "ray"]
        assert stored_steps(server, trials[0], "val_loss") == ([1, 2, 3], 3)
        # One at a time: each started only once the one before it had ended.
        spans = sorted((_time(op["started_at"]), _time(op["finished_at"])) for op in ran)
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
        assert operation(server, dropped)["started_at"] is None
    finally:
        server.stop()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


SCRIPTS = {
    # Trains "epochs" forever and starts a child of its own; both pids go to a file.
    "forever": """
        import subprocess, sys, time, training_mcp
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(sys.argv[1] + ".pids", "w") as out:
            out.write(f"{os.getpid()} {child.pid}")
        run = training_mcp.init()
        for epoch in range(1, 100_000):
            run.log(epoch, train_loss=1.0 / epoch)
            run.reporter.flush()
            print("epoch", epoch, flush=True)
            time.sleep(0.02)  # the script's own pace, not the test's
    """,
    "counts": """
        import sys, training_mcp
        run = training_mcp.init()
        for epoch in range(1, int(sys.argv[2]) + 1):
            run.log(epoch, train_loss=1.0 / epoch, val_loss=2.0 / epoch)
        run.finish()
    """,
    "fails": """
        import sys
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: bad batch shape (3, 7)", file=sys.stderr)
        sys.exit(3)
    """,
}


def _declare(folder: Path) -> Path:
    folder.mkdir()
    lines = []
    for name, body in SCRIPTS.items():
        (folder / f"{name}.py").write_text("import os\n" + textwrap.dedent(body))
        command = [sys.executable, f"{name}.py", "{operation_id}", "{epochs}"]
        lines.append(f"[entry_points.{name}]\ncommand = {command!r}\n".replace("'", '"'))
        lines.append(
            f'[entry_points.{name}.parameters]\nepochs = {{ type = "int", default = 4 }}\n'
        )
    path = folder / "entry_points.toml"
    path.write_text("\n".join(lines))
    return path


def _start_script(server: Process, args: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + API, json={**args, "backend": "ray"}, timeout=30)


def test_entry_points_run_on_ray_pushing_with_their_credential_stopped_by_signals(
    tmp_path: Path, cluster: Cluster
) -> None:
    folder = tmp_path / "scripts"
    declared = _declare(folder)
    extra = ["--entry-points", str(declared), "--max-concurrent-runs", "3"]
    server = ray_server(tmp_path, cluster, *extra).start()
    try:
        server.wait_ready()
        refused = _start_script(server, {"entry_point": "counts", "params": {"epochs": "many"}})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "params.epochs"
        assert httpx.get(server.url + API, timeout=10).json()["returned"] == 0  # nothing stored
        ids = {}
        for name, params in (("forever", {}), ("counts", {"epochs": 6}), ("fails", {})):
            response = _start_script(
                server, {"entry_point": name, "params": params, "resources": {"num_cpus": 1}}
            )
            assert response.status_code == 202, response.text
            assert response.json()["backend"] == "ray"
            ids[name] = response.json()["operation_id"]
        forever = ids["forever"]
        poll_until(lambda: operation(server, forever)["epochs_done"] >= 2, 60, server)
        assert operation(server, forever)["spec"]["entry_point"] == "forever"
        assert_only_the_worker_pushes(server, forever)
        # Its output while it runs, read from its actor on the node.
        live = _logs(server, forever, tail=1)
        assert live["lines"][0].startswith("epoch "), live
        pids = [int(p) for p in (folder / f"{forever}.pids").read_text().split()]
        stopped = cancel(server, forever, "enough")
        assert (stopped["status"], stopped["reason"]) == ("cancelled", "enough")
        # SIGINT reached the whole group: the script and the child it started are gone.
        poll_until(lambda: not any(_alive(pid) for pid in pids), 30)
        steps, total = stored_steps(server, forever)
        assert steps == list(range(1, len(steps) + 1)) and total == len(steps) >= 2

        ended = ("completed", "failed")
        poll_until(
            lambda: all(operation(server, ids[n])["status"] in ended for n in ("counts", "fails")),
            60,
            server,
        )
        counted = operation(server, ids["counts"])
        assert (counted["status"], counted["epochs_done"], counted["error"]) == (
            "completed",
            6,
            None,
        )
        assert stored_steps(server, ids["counts"], "val_loss") == (list(range(1, 7)), 6)
        failed = operation(server, ids["fails"])
        assert failed["status"] == "failed"
        assert failed["error"].startswith("the script ended with exit code 3")
        assert failed["error"].endswith("ValueError: bad batch shape (3, 7)")
        # Once ended, from the copy the server collected before the actor went.
        stderr = _logs(server, ids["fails"], stream="stderr")
        assert stderr["lines"] == [
            "Traceback (most recent call last):",
            "ValueError: bad batch shape (3, 7)",
        ], stderr
        assert _logs(server, forever, tail=1)["lines"][0].startswith("epoch ")
        poll_until(lambda: all(actor_gone(cluster, oid) for oid in ids.values()), 30)
    finally:
        server.stop()


def _logs(server: Process, operation_id: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}{API}/{operation_id}/logs", params=params, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not reaped yet counts as gone: it no longer runs.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
