"""Server-Sent Events for one run: an `epoch` event per epoch stored, a `status` event per status
change, and the end of the stream when the run has ended.

The stream is a replay of stored state, not a relay of notifications: after every change (and at
the start) it reads what was stored past the position it has delivered and sends that. So an event
id is a position in stored state, `e<epoch>` or `e<epoch>-<status>` (the last epoch and the last
status delivered; `e-1` before any epoch), and a client that reconnects with `Last-Event-ID`
gets exactly what it missed, from storage. Reconnecting to a run that has ended with nothing new
gets `204 No Content`, which tells an EventSource to stop reconnecting. (A client that missed
more than 10,000 epochs gets them downsampled, as a metrics read would: each bucket's first, min,
max and last epoch.)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from mcp_server.core.errors import InvalidInputError
from mcp_server.core.models import OperationMetrics
from mcp_server.core.queries import MetricsQuery
from mcp_server.core.service import TrainingService
from mcp_server.rest.models import EpochEvent
from storage import TERMINAL_STATUSES, NonFinite, OperationStatus

__all__ = ["HEARTBEAT_S", "StreamPosition", "operation_events", "parse_last_event_id"]

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
RETRY_MS = 2000  # how soon an EventSource reconnects after a dropped connection
_EVENT_ID = re.compile(r"^e(-1|\d{1,19})(?:-([a-z]{1,20}))?$")
_MAX_STEP = 2**62  # the largest step storage takes: every id this stream sends parses
_PAGE = 10_000  # the most epochs one read returns whole


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """What a client has received: epochs up to `epoch` (-1: none, so an epoch stored at step 0
    is sent too), and `status` (None: no status yet)."""

    epoch: int = -1
    status: OperationStatus | None = None

    @property
    def event_id(self) -> str:
        return f"e{self.epoch}" + (f"-{self.status.value}" if self.status else "")


def parse_last_event_id(value: str | None) -> StreamPosition:
    if value is None or value == "":
        return StreamPosition()
    match = _EVENT_ID.match(value)
    statuses = {s.value for s in OperationStatus}
    if (
        match is None
        or (match.group(2) is not None and match.group(2) not in statuses)
        or int(match.group(1)) > _MAX_STEP
    ):
        raise InvalidInputError(
            "Last-Event-ID: expected an id this stream sent, such as 'e12' or 'e12-running'",
            field="Last-Event-ID",
        )
    status = OperationStatus(match.group(2)) if match.group(2) else None
    return StreamPosition(int(match.group(1)), status)


def _frame(event: str, position: StreamPosition, data: str) -> bytes:
    return f"id: {position.event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def _epoch_events(read: OperationMetrics) -> list[EpochEvent]:
    values: dict[int, dict[str, float | None]] = defaultdict(dict)
    non_finite: dict[int, dict[str, NonFinite]] = defaultdict(dict)
    for series in read.series:
        for step, value in zip(series.steps, series.values, strict=True):
            values[step][series.name] = value
            if value is None and str(step) in series.non_finite:
                non_finite[step][series.name] = series.non_finite[str(step)]
    return [
        EpochEvent(
            operation_id=read.operation_id,
            epoch=epoch,
            status=read.status,
            epochs_done=read.epochs_done,
            epochs_total=read.epochs_total,
            values=values[epoch],
            non_finite=non_finite[epoch],
        )
        for epoch in sorted(values)
    ]


async def operation_events(
    service: TrainingService,
    operation_id: str,
    position: StreamPosition,
    *,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncIterator[bytes]:
    """The stream's bytes, from `position` until the run has ended and all of it was sent."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        changed = service.changed(operation_id)  # taken first: no change slips by
        query = MetricsQuery(metrics=["all"], cursor=f"e{position.epoch}", max_points=_PAGE)
        read = await service.get_metrics(operation_id, query)
        for event in _epoch_events(read):
            position = StreamPosition(event.epoch, position.status)
            yield _frame("epoch", position, event.model_dump_json())
        if read.status != position.status:
            op = await service.get_operation(operation_id)
            if op.status != read.status:
                continue  # it moved on between the two reads: read its epochs first
            position = StreamPosition(position.epoch, op.status)
            yield _frame("status", position, op.model_dump_json(exclude={"latest", "resources"}))
        if position.status in TERMINAL_STATUSES:
            return
        with anyio.move_on_after(heartbeat_s):
            await changed.wait()
        if not changed.is_set():
            yield b": keep-alive\n\n"


async def is_exhausted(
    service: TrainingService, operation_id: str, position: StreamPosition
) -> bool:
    """True when the run has ended and `position` already holds all of it (nothing to send)."""
    op = await service.get_operation(operation_id)
    return op.finished and position.status == op.status and position.epoch >= op.epochs_done
