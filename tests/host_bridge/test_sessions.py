"""Bridge sessions in this process: real training on CPU, a real spool file, and a scripted server
behind httpx.MockTransport (the real server is in test_bridge_live.py)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from host_bridge.entry_points import load_entry_points
from host_bridge.protocol import RESTART_ERROR, SHUTDOWN_ERROR, SessionRequest
from host_bridge.script_logs import LogsQuery
from host_bridge.sessions import (
    BridgeOptions,
    SessionError,
    SessionManager,
)
from host_bridge.spool import Spool
from training_mcp import MetricPoint, RetryPolicy

TINY = {"dataset": {"kind": "synthetic", "name": "blobs"}, "model": {"hidden_sizes": [16]}}
QUICK = RetryPolicy(attempts=2, base_delay_s=0.0, max_delay_s=0.01)
SERVERS = ("http://server.test",)  # the mock server this bridge may push to


class Server:
    """The server's REST mirror as the bridge sees it: stores points once per (name, step),
    records statuses and heartbeats; `down` refuses connections, `heartbeat_status` answers
    heartbeats."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.points: Counter[tuple[str, int]] = Counter()
        self.received: list[tuple[str, int]] = []
        self.statuses: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.down = False
        self.heartbeat_status = 200
        self.log: list[str] = []  # "metrics" / "status" / "heartbeat", in order of arrival

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if self.down:
                raise httpx.ConnectError("connection refused", request=request)
            kind = request.url.path.rsplit("/", 1)[-1]
            self.log.append(kind)
            body = json.loads(request.content or b"{}")
            if kind == "metrics":
                keys = [(p["name"], p["step"]) for p in body["points"]]
                self.received += keys
                new = [k for k in keys if k not in self.points]
                self.points.update(keys)
                return httpx.Response(200, json={"received": len(keys), "stored": len(new)})
            if kind == "status":
                self.statuses.append(body)
                return httpx.Response(200, json={"status": body["status"]})
            self.heartbeats += 1
            if self.heartbeat_status != 200:
                error = {"code": "conflict", "message": "operation is already cancelled"}
                return httpx.Response(self.heartbeat_status, json={"error": error})
            return httpx.Response(200, json={"status": "running"})

    def epochs(self, name: str = "train_loss") -> list[int]:
        with self.lock:
            return sorted(step for (n, step) in self.points if n == name)


def _request(operation_id: str = "op-a", **spec: Any) -> SessionRequest:
    return SessionRequest.model_validate(
        {
            "operation_id": operation_id,
            "spec": {**TINY, "epochs": 5, "batch_size": 64, "device": "cpu", **spec},
            "server_url": "http://server.test",
            "server_token": "s3cret",
            "heartbeat_interval_s": 0.02,
        }
    )


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def manager_for(tmp_path: Path, server: Server) -> Iterator[Callable[..., SessionManager]]:
    made: list[SessionManager] = []

    def make(**options: Any) -> SessionManager:
        opts = BridgeOptions(
            data_dir=tmp_path, retry=QUICK, max_pause_s=0.02, allowed_servers=SERVERS, **options
        )
        manager = SessionManager(opts, transport=httpx.MockTransport(server))
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll observable state until `check()` holds (the sessions run in their own threads)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not true after {timeout_s} s")
        threading.Event().wait(0.01)


def test_a_session_trains_and_every_point_arrives_before_the_status(
    manager_for: Callable[..., SessionManager], server: Server
) -> None:
    manager = manager_for()
    info, created = manager.start(_request())
    assert created and info.status == "running" and info.device == "cpu"
    wait_until(lambda: manager.get("op-a").delivered)
    assert server.epochs() == [1, 2, 3, 4, 5]
    assert server.epochs("step/train_loss") == [10, 20, 30, 40, 50, 60]
    assert server.statuses == [{"status": "completed"}]
    assert server.log.index("status") > max(i for i, k in enumerate(server.log) if k == "metrics")
    done = manager.get("op-a")
    assert (done.status, done.epochs_done, done.points_pending) == ("completed", 5, 0)
    assert manager.running == 0


def test_a_server_outage_for_the_whole_run_loses_nothing_and_duplicates_nothing(
    manager_for: Callable[..., SessionManager], server: Server
) -> None:
    server.down = True
    manager = manager_for()
    manager.start(_request(epochs=8))
    wait_until(lambda: manager.get("op-a").status == "completed")
    assert manager.get("op-a").points_pending > 0 and server.statuses == []
    server.down = False
    wait_until(lambda: manager.get("op-a").delivered)
    assert server.epochs() == list(range(1, 9))
    assert max(server.points.values()) == 1  # no point was ever sent twice after it was stored
    assert server.statuses == [{"status": "completed"}]


def test_a_retried_start_returns_the_session_without_training_twice(
    manager_for: Callable[..., SessionManager],
) -> None:
    manager = manager_for()
    first, created = manager.start(_request())
    again, created_again = manager.start(_request())
    assert created and not created_again
    assert again.operation_id == first.operation_id
    assert len(manager.list_sessions().sessions) == 1


def test_a_full_bridge_and_a_spec_it_cannot_run_are_refused(
    manager_for: Callable[..., SessionManager], tmp_path: Path
) -> None:
    manager = manager_for(max_sessions=1)
    manager.start(_request("op-long", epochs=100_000))
    with pytest.raises(SessionError) as full:
        manager.start(_request("op-next"))
    assert (full.value.http_status, full.value.code) == (503, "busy")
    outside = {"kind": "csv", "path": "/etc/passwd", "target": "y"}
    with pytest.raises(SessionError) as bad:
        manager.start(_request("op-csv", dataset=outside))
    assert (bad.value.http_status, bad.value.field) == (422, "spec.dataset.path")
    with pytest.raises(SessionError) as gpu:
        manager.start(_request("op-gpu", device="cuda"))
    assert gpu.value.field == "spec.device" and "not available" in gpu.value.message
    manager.cancel("op-long", "done")


def test_cancel_stops_within_a_batch_flushes_and_leaves_the_status_to_the_server(
    manager_for: Callable[..., SessionManager], server: Server
) -> None:
    manager = manager_for()
    manager.start(_request(epochs=100_000))
    wait_until(lambda: len(server.epochs()) >= 2)
    info, cancelled = manager.cancel("op-a", "enough")
    assert cancelled and info.cancel_requested
    wait_until(lambda: manager.get("op-a").delivered)
    done = manager.get("op-a")
    assert (done.status, done.reason, done.points_pending) == ("cancelled", "enough", 0)
    assert server.epochs() == list(range(1, done.epochs_done + 1))
    assert server.statuses == []
    _, again = manager.cancel("op-a")
    assert not again


def test_a_refused_heartbeat_means_the_server_ended_the_run_so_training_stops(
    manager_for: Callable[..., SessionManager], server: Server
) -> None:
    server.heartbeat_status = 409
    manager = manager_for()
    manager.start(_request(epochs=100_000))
    wait_until(lambda: manager.get("op-a").delivered)
    done = manager.get("op-a")
    assert done.status == "cancelled"
    assert done.reason is not None and "the server ended the run" in done.reason


def test_shutting_down_ends_a_running_session_as_failed_and_says_so(
    tmp_path: Path, server: Server
) -> None:
    options = BridgeOptions(
        data_dir=tmp_path, retry=QUICK, max_pause_s=0.02, allowed_servers=SERVERS
    )
    manager = SessionManager(options, transport=httpx.MockTransport(server))
    manager.start(_request(epochs=100_000))
    wait_until(lambda: len(server.epochs()) >= 1)
    manager.close()
    (status,) = server.statuses
    assert (status["status"], status["error"]) == ("failed", SHUTDOWN_ERROR)
    assert status["reason"].startswith("cancelled during epoch")


def test_a_restarted_bridge_delivers_what_the_killed_one_left_and_reports_it_failed(
    tmp_path: Path, server: Server, manager_for: Callable[..., SessionManager]
) -> None:
    spool = Spool.in_dir(tmp_path)  # what a killed bridge left: a running session, 2 epochs
    spool.create(_request())
    spool.queue("op-a").put([MetricPoint("train_loss", e, 0.5, e, 1.0) for e in (1, 2)])
    spool.close()
    manager = manager_for()
    assert manager.resume() == 1
    wait_until(lambda: manager.get("op-a").delivered)
    assert server.epochs() == [1, 2]
    assert server.statuses == [{"status": "failed", "error": RESTART_ERROR}]
    assert manager.resume() == 0


def test_a_script_sessions_output_is_kept_in_bounded_logs_of_the_newest_scripts_only(
    manager_for: Callable[..., SessionManager], tmp_path: Path
) -> None:
    declared = tmp_path / "entry_points.toml"
    flood = "import sys; print('x' * 5000); print('to stderr', file=sys.stderr)"
    declared.write_text(f"[entry_points.talk]\ncommand = [{sys.executable!r}, '-c', {flood!r}]\n")
    manager = manager_for(
        entry_points=load_entry_points(declared), log_bytes=2048, log_files=2, logs_kept=2
    )
    for op in ("op-1", "op-2", "op-3"):
        request = SessionRequest.model_validate(
            {"operation_id": op, "script": {"entry_point": "talk"}, "server_url": SERVERS[0]}
        )
        manager.start(request)
        wait_until(lambda op=op: manager.get(op).delivered)  # type: ignore[misc]
    stdout = manager.logs("op-3", LogsQuery.model_validate({"stream": "stdout"}))
    # 5,001 bytes written, files of 2,048 rotated, two kept (bytes 2,048 to 5,001): the line
    # is cut, and the answer says so.
    assert (stdout.next_cursor, stdout.truncated) == (5001, True), stdout
    assert stdout.lines == ["x" * 2952]
    stderr = manager.logs("op-3", LogsQuery.model_validate({"stream": "stderr"}))
    assert (stderr.lines, stderr.truncated) == (["to stderr"], False), stderr
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["op-2", "op-3"]
    with pytest.raises(SessionError, match="no logs of 'op-1' are kept on this bridge"):
        manager.logs("op-1", LogsQuery.model_validate({}))
    manager.start(_request("op-4"))
    with pytest.raises(SessionError, match="runs the built-in trainer"):
        manager.logs("op-4", LogsQuery.model_validate({}))
