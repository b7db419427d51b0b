"""The metrics reporter against a scripted server (httpx.MockTransport); the real server is in
tests/mcp_server/rest/test_live.py."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from storage import MetricPointIn
from trainer.records import EpochRecord, StepRecord
from training_mcp import MemoryQueue, MetricPoint, MetricsReporter, ReportError, RetryPolicy

BASE = "http://server.test"
NO_WAIT = RetryPolicy(attempts=3, base_delay_s=0.0, max_delay_s=0.0)


class Server:
    """Records every request; answers with `answer(request)` (default: all stored)."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or self.store_all

    @staticmethod
    def store_all(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = len(body.get("points", []))
        return httpx.Response(200, json={"received": n, "stored": n, "duplicates": 0})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def reporter(server: Server, **options: Any) -> MetricsReporter:
    options.setdefault("retry", NO_WAIT)
    return MetricsReporter(BASE, "op-test", transport=httpx.MockTransport(server), **options)


def test_an_epoch_logged_in_one_line_reaches_the_server_with_nan_as_a_json_token() -> None:
    server = Server()
    with reporter(server, token="s3cret") as r:
        r.log(1, train_loss=0.5, val_loss=float("nan"), wall_time=100.0)
        r.flush()
        assert r.stats.points_stored == 2
    (request,) = server.requests
    assert request.url.path == "/api/v1/operations/op-test/metrics"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert b"NaN" in request.content
    points = json.loads(request.content)["points"]
    assert points[0] == {
        "name": "train_loss",
        "step": 1,
        "value": 0.5,
        "epoch": 1,
        "wall_time": 100.0,
    }
    assert points[1]["name"] == "val_loss"


def test_points_logged_while_a_request_is_in_flight_go_out_together_in_one_batch() -> None:
    in_flight, release = threading.Event(), threading.Event()

    def slow_first(request: httpx.Request) -> httpx.Response:
        if not in_flight.is_set():
            in_flight.set()
            assert release.wait(10)
        return Server.store_all(request)

    server = Server(slow_first)
    with reporter(server) as r:
        r.log(1, loss=1.0)
        assert in_flight.wait(10)
        for epoch in range(2, 6):
            r.log(epoch, loss=1.0 / epoch)
        release.set()
        r.flush()
    assert [len(b["points"]) for b in server.bodies()] == [1, 4]


def test_step_points_linger_for_company_and_an_epoch_point_sends_them_all_at_once() -> None:
    answered = threading.Event()

    def store_and_tell(request: httpx.Request) -> httpx.Response:
        answered.set()
        return Server.store_all(request)

    server = Server(store_and_tell)
    with reporter(server, linger_s=60.0) as r:  # a linger no test would wait out
        for step in range(1, 101):
            r.log(step, {"step/train_loss": 1.0 / step})
        r.log(1, val_loss=0.5)  # an epoch point: the agent is waiting for it
        assert answered.wait(10)  # sent without a flush, long before the linger ends
        assert [len(b["points"]) for b in server.bodies()] == [101]


def test_flush_sends_lingering_step_points_at_once() -> None:
    server = Server()
    with reporter(server, linger_s=60.0) as r:
        r.log(1, {"step/train_loss": 0.7})
        r.log(2, {"step/train_loss": 0.6})
        r.flush(timeout_s=10.0)  # would time out if the sender waited out its linger
        assert r.stats.points_stored == 2
    assert [len(b["points"]) for b in server.bodies()] == [2]


def test_a_linger_past_a_minute_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="linger_s"):
        reporter(Server(), linger_s=61.0)


def test_batches_never_exceed_max_batch_points() -> None:
    server = Server()
    queue = MemoryQueue()
    queue.put([MetricPoint("loss", step, 1.0, step) for step in range(1, 26)])
    with reporter(server, max_batch=10, queue=queue) as r:
        r.flush()
    assert [len(b["points"]) for b in server.bodies()] == [10, 10, 5]


def test_transient_failures_are_retried_until_the_server_stores_the_batch() -> None:
    answers = iter([503, 502])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(answers, 200)
        if status != 200:
            return httpx.Response(status, json={"error": {"code": "x", "message": "busy"}})
        return Server.store_all(request)

    server = Server(flaky)
    with reporter(server) as r:
        r.log(3, loss=0.1)
        r.flush()
        assert r.stats.retries == 2
        assert r.stats.points_stored == 1
    assert len(server.requests) == 3
    assert server.requests[0].content == server.requests[2].content  # the same batch, resent


def test_retry_delays_grow_exponentially_with_full_jitter_and_honour_retry_after() -> None:
    policy = RetryPolicy(attempts=8, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(7)
    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range
    assert policy.delay(0, rng, retry_after=3.0) >= 3.0
    assert policy.delay(0, rng, retry_after=60.0) <= 4.0
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_a_refused_batch_is_dropped_and_its_error_raised_at_flush() -> None:
    def refuse(_request: httpx.Request) -> httpx.Response:
        error = {"code": "conflict", "message": "finished", "field": "operation_id"}
        return httpx.Response(409, json={"error": error})

    server = Server(refuse)
    r = reporter(server)
    r.log(1, loss=0.3)
    with pytest.raises(ReportError) as caught:
        r.flush()
    assert (caught.value.status_code, caught.value.code, caught.value.field) == (
        409,
        "conflict",
        "operation_id",
    )
    assert not caught.value.transient
    assert len(server.requests) == 1  # a refusal is not retried
    assert (r.stats.points_refused, r.stats.queued) == (1, 0)
    r.close()


def test_an_unreachable_server_keeps_points_queued_until_it_answers() -> None:
    reachable = False

    def network(request: httpx.Request) -> httpx.Response:
        if not reachable:
            raise httpx.ConnectError("connection refused", request=request)
        return Server.store_all(request)

    server = Server(network)
    r = reporter(server)
    r.log(1, loss=0.3, acc=0.9)
    with pytest.raises(ReportError) as caught:
        r.flush()
    assert caught.value.transient
    assert r.stats.queued == 2
    assert len(server.requests) >= NO_WAIT.attempts  # the background sender may try too
    reachable = True
    r.flush()
    assert (r.stats.queued, r.stats.points_stored) == (0, 2)
    r.close()


def test_an_outage_that_is_over_leaves_no_error_behind_for_the_next_flush() -> None:
    reachable = False
    third_try = threading.Event()

    def network(request: httpx.Request) -> httpx.Response:
        if not reachable:
            if len(server.requests) == NO_WAIT.attempts:
                third_try.set()
            raise httpx.ConnectError("connection refused", request=request)
        return Server.store_all(request)

    server = Server(network)
    r = reporter(server)
    r.log(1, loss=0.3)  # the sender gives up on it in the background: nobody flushes
    assert third_try.wait(10)
    reachable = True
    r.log(2, loss=0.2)  # the server is back: both go out
    r.flush()  # no stale "connection refused" from the outage
    assert (r.stats.queued, r.stats.points_stored) == (0, 2)
    r.close()


def test_close_keeps_trying_a_server_that_is_down_until_its_timeout() -> None:
    def restarting(request: httpx.Request) -> httpx.Response:
        if len(server.requests) <= NO_WAIT.attempts + 1:  # down for more than one round
            raise httpx.ConnectError("connection refused", request=request)
        return Server.store_all(request)

    server = Server(restarting)
    r = reporter(server)
    r.log(1, loss=0.3)
    r.close(timeout_s=30)  # a script's last points, while its server restarts
    assert (r.stats.queued, r.stats.points_stored) == (0, 1)


def test_the_servers_stop_request_is_read_from_push_answers() -> None:
    stop: dict[str, Any] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["points"])
        return httpx.Response(200, json={"received": n, "stored": n, "duplicates": 0, **stop})

    r = reporter(Server(answer))
    r.log(1, loss=0.3)
    r.flush()
    assert r.stop_requested is None
    stop["stop_requested"] = "enough"
    r.log(2, loss=0.2)
    r.flush()
    assert r.stop_requested == "enough"
    r.close()


def test_a_run_that_ended_on_the_server_is_a_stop_request() -> None:
    def ended(request: httpx.Request) -> httpx.Response:
        error = {"code": "conflict", "message": "operation 'op-test' is cancelled"}
        return httpx.Response(409, json={"error": {**error, "field": "operation_id"}})

    r = reporter(Server(ended))
    r.log(1, loss=0.3)
    with pytest.raises(ReportError):
        r.flush()
    assert r.stop_requested == "HTTP 409: operation 'op-test' is cancelled"
    r.close()


def test_points_leave_a_plugged_in_queue_only_once_the_server_answered() -> None:
    class RecordingQueue(MemoryQueue):
        def __init__(self) -> None:
            super().__init__()
            self.acked: list[int] = []

        def ack(self, count: int) -> None:
            self.acked.append(count)
            super().ack(count)

    seen_queued: list[int] = []
    queue = RecordingQueue()

    def answer(request: httpx.Request) -> httpx.Response:
        seen_queued.append(len(queue))
        return Server.store_all(request)

    with reporter(Server(answer), queue=queue) as r:
        r.log(1, loss=0.3, acc=0.9)
        r.flush()
    assert seen_queued == [2]  # still queued while the request was in flight
    assert queue.acked == [2]
    assert len(queue) == 0


def test_log_refuses_bad_names_steps_and_values_at_the_call_site() -> None:
    r = reporter(Server())
    with pytest.raises(ValueError, match="metric name '1st'"):
        r.log(1, {"1st": 0.5})
    with pytest.raises(ValueError, match="step"):
        r.log(-1, loss=0.5)
    with pytest.raises(ValueError, match="loss: must be a number"):
        r.log(1, loss="low")  # type: ignore[arg-type]
    assert r.stats.queued == 0
    r.close()


@pytest.mark.parametrize(
    "name",
    ["loss", "step/train_loss", "a.b-c_d/e", "x" * 128, "1st", "x" * 129, "a b", "", "é", "loss\n"],
)
def test_the_reporter_refuses_exactly_the_names_the_server_refuses(name: str) -> None:
    try:
        MetricPointIn(name=name, step=1, value=0.0)
        server_takes = True
    except ValidationError:
        server_takes = False
    r = reporter(Server())
    try:
        r.log(1, {name: 0.5})
        client_takes = True
    except ValueError:
        client_takes = False
    r.close()
    assert client_takes == server_takes


def test_the_reporter_is_a_metric_sink_for_the_training_loop() -> None:
    server = Server()
    with reporter(server) as r:
        r.on_step(StepRecord(step=40, epoch=1, train_loss=0.7, timestamp=10.0))
        r.on_epoch(
            EpochRecord(
                epoch=1,
                train_loss=0.6,
                learning_rate=0.01,
                epoch_duration_s=1.0,
                samples_per_s=100.0,
                grad_norm=2.0,
                timestamp=11.0,
                val_loss=0.65,
            )
        )
        r.flush()
    points = [p for b in server.bodies() for p in b["points"]]
    assert points[0] == {
        "name": "step/train_loss",
        "step": 40,
        "value": 0.7,
        "epoch": 1,
        "wall_time": 10.0,
    }
    by_name = {p["name"]: p for p in points[1:]}
    assert by_name["val_loss"] == {
        "name": "val_loss",
        "step": 1,
        "value": 0.65,
        "epoch": 1,
        "wall_time": 11.0,
    }
    assert set(by_name) == {
        "train_loss",
        "val_loss",
        "learning_rate",
        "epoch_duration_s",
        "samples_per_s",
        "grad_norm",
    }


def _run_server() -> Server:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/operations":
            body = json.loads(request.content)
            assert body["backend"] == "external"
            return httpx.Response(202, json={"operation_id": "op-new", "status": "running"})
        if request.url.path.endswith("/status"):
            return httpx.Response(
                200, json={"operation_id": "op-new", **json.loads(request.content)}
            )
        return Server.store_all(request)

    return Server(answer)


def test_start_run_registers_an_external_run_and_reports_it_completed_on_exit() -> None:
    server = _run_server()
    transport = httpx.MockTransport(server)
    with MetricsReporter.start_run(BASE, name="mine", epochs=2, transport=transport) as run:
        assert run.operation_id == "op-new"
        for epoch in (1, 2):
            run.log(epoch, train_loss=1.0 / epoch)
    paths = [r.url.path for r in server.requests]
    assert paths[0] == "/api/v1/operations"
    assert paths[-1] == "/api/v1/operations/op-new/status"
    assert server.bodies()[0] == {"backend": "external", "name": "mine", "epochs": 2}
    assert server.bodies()[-1] == {"status": "completed"}
    assert sum(len(b.get("points", [])) for b in server.bodies()) == 2


def test_a_run_that_raises_is_reported_failed_and_the_exception_still_propagates() -> None:
    server = _run_server()
    transport = httpx.MockTransport(server)
    with (
        pytest.raises(RuntimeError, match="out of memory"),
        MetricsReporter.start_run(BASE, transport=transport) as run,
    ):
        run.log(1, train_loss=2.0)
        raise RuntimeError("out of memory")
    assert server.bodies()[-1] == {"status": "failed", "error": "RuntimeError: out of memory"}
