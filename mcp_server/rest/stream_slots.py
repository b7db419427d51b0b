"""How many event streams may be open: per run and in all. Each open stream is a task that reads
storage after every change of its run; hundreds of them slowed a run 26x and everyone's reads
with it. A stream past a cap is refused (429) before it starts, naming the cap."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from mcp_server.core.errors import ServiceError

__all__ = ["StreamSlots", "TooManyStreamsError"]


class TooManyStreamsError(ServiceError):
    code = "too_many_streams"
    http_status = 429


class StreamSlots:
    def __init__(self, per_run: int, total: int) -> None:
        if per_run < 1 or total < 1:
            raise ValueError("stream caps: at least 1 per run and in all")
        self.per_run = per_run
        self.total = total
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def acquire(self, operation_id: str) -> None:
        """Take a slot for a stream of `operation_id`, or raise `TooManyStreamsError`."""
        if self._open[operation_id] >= self.per_run:
            raise TooManyStreamsError(
                f"events: {self.per_run} streams of this run are open already (the server's "
                "--max-event-streams-per-run); close one or read /metrics with a cursor",
                field="events",
            )
        if self.open >= self.total:
            raise TooManyStreamsError(
                f"events: {self.total} event streams are open on this server (its "
                "--max-event-streams); try again later",
                field="events",
            )
        self._open[operation_id] += 1

    def release(self, operation_id: str) -> None:
        self._open[operation_id] -= 1
        if self._open[operation_id] <= 0:
            del self._open[operation_id]

    async def holding(
        self, operation_id: str, stream: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """`stream`, giving its slot back however it ends (finished, or the client left)."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.release(operation_id)
