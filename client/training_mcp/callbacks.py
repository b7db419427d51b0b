"""What the framework callbacks share: the run they report to, and the stop request.

A stop request reaches a callback two ways: the server's answer to a push says the run was asked
to stop (`Run.should_stop`: what `stop_training` sets first), or SIGINT (what it sends next, and
Ctrl-C), which while a callback trains only sets a flag. Either way the callback ends training at
the next step boundary, so the script finishes its epoch bookkeeping and exits on its own.
Standard library only.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from training_mcp.points import METRIC_NAME_PATTERN
from training_mcp.run import Run, init

__all__ = ["StopRequest", "numbers", "open_run"]

_NAME = re.compile(METRIC_NAME_PATTERN)


class StopRequest:
    """Set by SIGINT while installed (main thread only; elsewhere it stays unset)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: Any = None
        self._installed = False

    def is_set(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._installed:
            return
        self._previous = signal.signal(signal.SIGINT, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():  # a second Ctrl-C: the usual interrupt
            self.uninstall()
            raise KeyboardInterrupt
        self._event.set()


def open_run(run: Run | None, name: str | None, config: Mapping[str, Any] | None) -> Run:
    """The run given, or `training_mcp.init()` (attached from the environment when the server
    started the script)."""
    return run if run is not None else init(name=name, config=config)


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The values that are single numbers under valid metric names (tensors included)."""
    out: dict[str, float] = {}
    for name, raw in values.items():
        if not isinstance(name, str) or not _NAME.match(name):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of many values
            continue
        out[name] = value  # NaN and infinities too: the server stores them faithfully
    return out
