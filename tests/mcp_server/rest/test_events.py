"""The event stream generator itself: live epochs as they are pushed, keep-alive comments while
nothing happens, and positions that resume exactly."""

from __future__ import annotations

import pytest

from mcp_server.core.errors import InvalidInputError
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.service import TrainingService
from mcp_server.rest.events import StreamPosition, operation_events, parse_last_event_id
from storage import OperationStatus
from tests.mcp_server.rest.support import parse_events

pytestmark = pytest.mark.anyio


async def test_a_running_run_streams_its_status_then_each_pushed_epoch_live(
    service: TrainingService,
) -> None:
    started = await service.start_training(
        StartTrainingArgs.model_validate({"backend": "external"})
    )
    operation_id = started.operation_id
    stream = operation_events(service, operation_id, StreamPosition(), heartbeat_s=0.01)
    assert (await anext(stream)).startswith(b"retry: ")
    (running,) = parse_events((await anext(stream)).decode())
    assert (running.id, running.event) == ("e-1-running", "status")  # no epoch yet
    assert await anext(stream) == b": keep-alive\n\n"  # nothing new within a heartbeat

    token = started.push_token
    await service.push_metrics(operation_id, [{"name": "loss", "step": 1, "value": 0.5}], token)
    chunk = await anext(stream)
    while chunk == b": keep-alive\n\n":
        chunk = await anext(stream)
    (epoch,) = parse_events(chunk.decode())
    assert (epoch.id, epoch.event) == ("e1-running", "epoch")

    await service.report_status(operation_id, OperationStatus.COMPLETED, push_token=token)
    rest = [chunk async for chunk in stream if chunk != b": keep-alive\n\n"]
    (done,) = parse_events(b"".join(rest).decode())
    assert (done.id, done.event) == ("e1-completed", "status")


def test_event_ids_round_trip_and_strangers_are_refused() -> None:
    for position in (
        StreamPosition(),
        StreamPosition(12),
        StreamPosition(12, OperationStatus.RUNNING),
        StreamPosition(-1, OperationStatus.RUNNING),
        StreamPosition(2**62),  # the largest step storage takes
    ):
        assert parse_last_event_id(position.event_id) == position
    assert parse_last_event_id(None) == StreamPosition()
    for bad in ("12", "e-2", "e12-sleeping", "e1x", "e" + "9" * 20, f"e{2**62 + 1}"):
        with pytest.raises(InvalidInputError) as caught:
            parse_last_event_id(bad)
        assert caught.value.field == "Last-Event-ID"
