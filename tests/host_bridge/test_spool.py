"""The bridge's spool: a real SQLite file in tmp_path, reopened as a restarted bridge would."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import pytest

from host_bridge.protocol import SessionRequest
from host_bridge.spool import Spool
from trainer.spec import TrainingSpec
from training_mcp import MetricPoint


def _request(operation_id: str = "op-a", token: str | None = "s3cret") -> SessionRequest:
    return SessionRequest.model_validate(
        {
            "operation_id": operation_id,
            "spec": TrainingSpec(epochs=4).model_dump(mode="json"),
            "server_url": "http://127.0.0.1:8765",
            "server_token": token,
        }
    )


def _points(*steps: int) -> list[MetricPoint]:
    return [MetricPoint("train_loss", s, 1.0 / s, s, 100.0 + s) for s in steps]


def test_points_leave_in_order_and_only_the_acknowledged_ones(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    spool.create(_request())
    queue = spool.queue("op-a")
    queue.put(_points(1, 2, 3))
    queue.put(_points(4))
    assert len(queue) == 4
    assert [p.step for p in queue.peek(2)] == [1, 2]
    queue.ack(2)
    assert [p.step for p in queue.peek(10)] == [3, 4]
    assert len(queue) == 2
    queue.ack(10)  # more than there is: empties it, no error
    assert len(queue) == 0 and queue.peek(10) == []


def test_unacknowledged_points_and_sessions_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    spool.create(_request())
    spool.queue("op-a").put(_points(1, 2, 3))
    spool.queue("op-a").ack(1)
    spool.update("op-a", epochs_done=3)
    spool.close()

    reopened = Spool.in_dir(tmp_path)
    queue = reopened.queue("op-a")
    assert len(queue) == 2
    assert queue.peek(10) == _points(2, 3)
    info = reopened.get("op-a")
    assert info is not None
    assert (info.status, info.epochs_done, info.points_pending, info.delivered) == (
        "running",
        3,
        2,
        False,
    )
    assert reopened.request("op-a") == _request()  # the token too: the delivery can resume


def test_non_finite_values_come_back_as_they_went_in(tmp_path: Path) -> None:
    queue = Spool.in_dir(tmp_path).queue("op-a")
    queue.put(
        [
            MetricPoint("val_loss", 1, math.nan, 1),
            MetricPoint("val_loss", 2, math.inf, 2),
            MetricPoint("val_loss", 3, -math.inf, 3),
        ]
    )
    values = [p.value for p in queue.peek(3)]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_sessions_of_two_runs_keep_their_points_apart(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    spool.create(_request("op-a"))
    spool.create(_request("op-b"))
    spool.queue("op-a").put(_points(1, 2))
    spool.queue("op-b").put(_points(7))
    spool.queue("op-a").ack(2)
    assert [p.step for p in spool.queue("op-b").peek(10)] == [7]
    assert [s.operation_id for s in spool.sessions()] == ["op-a", "op-b"]


def test_a_finished_session_waits_as_undelivered_until_the_server_has_it(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    spool.create(_request())
    spool.finish("op-a", "failed", error="boom", device="cpu")
    (waiting,) = spool.undelivered()
    assert (waiting.status, waiting.error, waiting.device) == ("failed", "boom", "cpu")
    assert waiting.finished_at is not None
    spool.update("op-a", delivered=1)
    assert spool.undelivered() == []


def test_the_file_is_private_and_the_token_never_shows_in_a_repr(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    request = _request(token="s3cret")
    assert "s3cret" not in repr(request)
    assert '"server_token":"s3cret"' in request.model_dump_json()  # on the wire it must travel


def test_update_refuses_fields_that_are_not_a_sessions(tmp_path: Path) -> None:
    spool = Spool.in_dir(tmp_path)
    spool.create(_request())
    with pytest.raises(ValueError, match="request"):
        spool.update("op-a", request="{}")
