"""Change notifications: one hub that ingestion publishes to and every reader listens on.

Listeners are the MCP subscription fan-out (both protocol eras) and the REST event streams;
`changed()` gives `wait_for_operation` an event to wait on. Publishing happens on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio

__all__ = ["Change", "Listener", "Notifier"]

log = logging.getLogger(__name__)

ChangeKind = Literal["created", "epoch", "status", "metrics"]


@dataclass(frozen=True, slots=True)
class Change:
    """Something new about an operation: created, an epoch stored, metrics pushed, a status."""

    operation_id: str
    kind: ChangeKind
    epoch: int | None = None
    status: str | None = None


Listener = Callable[[Change], Awaitable[None]]


class Notifier:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._waiters: dict[str, anyio.Event] = {}

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every change; returns the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def changed(self, operation_id: str) -> anyio.Event:
        """An event set at the next change of this operation."""
        event = self._waiters.get(operation_id)
        if event is None:
            event = self._waiters[operation_id] = anyio.Event()
        return event

    def wake(self, operation_id: str) -> None:
        """Wake those waiting on this operation (`changed()`) without telling the listeners: new
        data no resource shows by default (a system sample), so no subscriber reads again."""
        waiter = self._waiters.pop(operation_id, None)
        if waiter is not None:
            waiter.set()

    async def publish(self, change: Change) -> None:
        waiter = self._waiters.pop(change.operation_id, None)
        if waiter is not None:
            waiter.set()
        for listener in list(self._listeners):
            try:
                await listener(change)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:  # a broken client connection must not stop ingestion
                log.exception("change listener failed for %s", change)
