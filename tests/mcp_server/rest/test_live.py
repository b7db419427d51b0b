"""The REST mirror under a real uvicorn on a loopback port: real trainings followed through their
event stream, and an external run fed by the reporting client."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from mcp_server.core.service import TrainingService
from tests.mcp_server.conftest import TINY
from tests.mcp_server.rest.support import Event, live_server, read_events
from training_mcp import MetricsReporter, ReportError, RetryPolicy

pytestmark = pytest.mark.anyio

API = "/api/v1"


async def _follow(http: httpx.AsyncClient, operation_id: str, **headers: str) -> list[Event]:
    events = []
    with anyio.fail_after(60):
        async with http.stream(
            "GET", f"/operations/{operation_id}/events", headers=headers
        ) as response:
            assert response.status_code == 200
            async for event in read_events(response):
                events.append(event)
    return events


def _epochs(events: list[Event]) -> list[int]:
    return [json.loads(e.data)["epoch"] for e in events if e.event == "epoch"]


def _statuses(events: list[Event]) -> list[str]:
    return [json.loads(e.data)["status"] for e in events if e.event == "status"]


async def test_a_training_started_by_post_is_followed_to_its_end_through_events(
    service: TrainingService,
) -> None:
    async with (
        live_server(service) as base,
        httpx.AsyncClient(base_url=base + API, timeout=30) as http,
    ):
        started = await http.post("/operations", json=TINY)
        assert started.status_code == 202, started.text
        operation_id = started.json()["operation_id"]
        assert started.headers["location"] == f"{API}/operations/{operation_id}"

        events = await _follow(http, operation_id)
        assert _epochs(events) == [1, 2, 3]
        assert _statuses(events)[-1] == "completed"
        assert events[-1].event == "status"
        assert events[-1].id == "e3-completed"

        metrics = (await http.get(f"/operations/{operation_id}/metrics")).json()
        loss = next(s for s in metrics["series"] if s["name"] == "train_loss")
        assert (metrics["status"], loss["steps"]) == ("completed", [1, 2, 3])
        analysis = (await http.get(f"/operations/{operation_id}/analysis")).json()
        assert (analysis["epochs_analyzed"], analysis["monitor"]) == (3, "val_loss")
        plot = await http.get(f"/operations/{operation_id}/plot.png")
        assert plot.headers["content-type"] == "image/png"
        assert plot.content.startswith(b"\x89PNG")

        second = next(e for e in events if e.event == "epoch" and json.loads(e.data)["epoch"] == 2)
        assert second.id is not None
        resumed = await _follow(http, operation_id, **{"Last-Event-ID": second.id})
        assert (_epochs(resumed), _statuses(resumed)) == ([3], ["completed"])
        ended = await http.get(
            f"/operations/{operation_id}/events", headers={"Last-Event-ID": "e3-completed"}
        )
        assert ended.status_code == 204


async def test_a_running_training_is_cancelled_and_its_stream_ends_with_that(
    service: TrainingService,
) -> None:
    async with (
        live_server(service) as base,
        httpx.AsyncClient(base_url=base + API, timeout=30) as http,
    ):
        started = await http.post("/operations", json={**TINY, "epochs": 2000})
        operation_id = started.json()["operation_id"]
        refused = await http.post(f"/operations/{operation_id}/status", json={"status": "failed"})
        assert refused.status_code == 409
        assert refused.json()["error"]["field"] == "status"

        events: list[Event] = []
        with anyio.fail_after(60):
            async with http.stream("GET", f"/operations/{operation_id}/events") as response:
                async for event in read_events(response):
                    events.append(event)
                    if event.event == "epoch" and len(_epochs(events)) == 1:
                        cancel = await http.post(
                            f"/operations/{operation_id}/cancel", json={"reason": "enough"}
                        )
                        assert cancel.status_code == 200, cancel.text
                        assert cancel.json()["status"] == "cancelled"
        assert _statuses(events)[-1] == "cancelled"
        assert json.loads(events[-1].data)["reason"] == "enough"
        assert len(_epochs(events)) < 2000


def _val_loss(epoch: int) -> float:
    """Improves until epoch 6, then rises: a run that overfits."""
    return 1.0 - 0.1 * epoch if epoch <= 6 else 0.4 + 0.05 * (epoch - 6)


async def test_an_external_run_fed_by_the_reporter_is_completed_then_analysed(
    service: TrainingService,
) -> None:
    token = "t0ken-for-this-test"
    async with (
        live_server(service, token=token) as base,
        httpx.AsyncClient(
            base_url=base + API, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http,
    ):

        def train_elsewhere() -> tuple[str, str | None]:
            with MetricsReporter.start_run(base, name="keras-like", epochs=12, token=token) as run:
                for epoch in range(1, 13):
                    run.log(epoch, train_loss=1.0 / epoch, val_loss=_val_loss(epoch))
                return run.operation_id, run.push_token

        operation_id, push_token = await anyio.to_thread.run_sync(train_elsewhere)
        assert push_token

        op = (await http.get(f"/operations/{operation_id}")).json()
        assert (op["backend"], op["status"], op["epochs_done"]) == ("external", "completed", 12)
        analysis = (await http.get(f"/operations/{operation_id}/analysis")).json()
        assert (analysis["epochs_analyzed"], analysis["best_epoch"]) == (12, 6)
        events = await _follow(http, operation_id)
        assert (_epochs(events), _statuses(events)) == (list(range(1, 13)), ["completed"])

        def push_late_and_unauthenticated() -> tuple[ReportError, ReportError]:
            late = MetricsReporter(base, operation_id, token=token, push_token=push_token)
            anonymous = MetricsReporter(
                base, operation_id, retry=RetryPolicy(attempts=1, base_delay_s=0.0)
            )
            errors = []
            for reporter in (late, anonymous):
                reporter.log(13, train_loss=0.05)
                with pytest.raises(ReportError) as caught:
                    reporter.close()
                errors.append(caught.value)
            return errors[0], errors[1]

        late, anonymous = await anyio.to_thread.run_sync(push_late_and_unauthenticated)
        assert (late.status_code, late.code) == (409, "conflict")
        assert (anonymous.status_code, anonymous.code) == (401, "unauthorized")
