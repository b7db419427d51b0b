"""TensorBoard scalars of a script run, read from its declared log dir with TensorBoard's own
event reader and stored on the same path as every pushed point (a script that already logs
scalars needs no change).

A scalar tag becomes a metric name (characters a name may not hold become `_`; `Loss/train`
stays `Loss/train`), its step the point's step: an epoch metric, unless the tag starts with
`step/`. TensorBoard is an optional extra (`pip install -e ".[tensorboard]"`); without it a
declared log dir is reported once in the server log and ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from training_mcp.points import MetricPoint, is_step_metric

__all__ = ["EventDirReader", "follow_logdir", "tensorboard_available"]

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the log dir is looked at while the script runs
_BAD = re.compile(r"[^A-Za-z0-9_./-]")


def tensorboard_available() -> bool:
    try:
        from tensorboard.backend.event_processing import event_file_loader  # noqa: F401
    except ImportError:
        return False
    return True


def metric_name(tag: str) -> str | None:
    """A TensorBoard tag as a metric name, or None when nothing usable is left."""
    name = _BAD.sub("_", tag.strip())[:128]
    if not name or not name[0].isalpha():
        name = ("m_" + name)[:128] if name else ""
    return name or None


class EventDirReader:
    """Reads new scalar events from every event file under `logdir` (files appear as the script
    writes them; each is read on from where the last call stopped)."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._loaders: dict[Path, Any] = {}

    def read(self) -> list[MetricPoint]:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        if self._logdir.is_dir():
            for path in sorted(self._logdir.rglob("events.out.tfevents.*")):
                if path not in self._loaders:
                    self._loaders[path] = EventFileLoader(str(path))
        points: list[MetricPoint] = []
        for loader in self._loaders.values():
            for event in loader.Load():
                points += _scalars(event)
        return points


def _scalars(event: Any) -> list[MetricPoint]:
    if not event.HasField("summary"):
        return []
    points = []
    for value in event.summary.value:
        number = _number(value)
        name = metric_name(value.tag)
        if number is None or name is None or event.step < 0:
            continue
        epoch = None if is_step_metric(name) else event.step
        points.append(MetricPoint(name, event.step, number, epoch, event.wall_time or None))
    return points


def _number(value: Any) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
        from tensorboard.util import tensor_util

        array = tensor_util.make_ndarray(value.tensor)
        return float(array.item()) if array.size == 1 else None
    return None


async def follow_logdir(
    logdir: Path,
    store: Callable[[list[MetricPoint]], Awaitable[None]],
    running: Callable[[], bool],
) -> None:
    """Store new scalars every POLL_S while `running()`, then one last read."""
    if not tensorboard_available():
        log.warning(
            "tensorboard_logdir %s: TensorBoard is not installed (pip install -e "
            '".[tensorboard]"); its scalars are not read',
            logdir,
        )
        return
    reader = EventDirReader(logdir)
    while True:
        last = not running()
        points = await anyio.to_thread.run_sync(reader.read)
        if points:
            await store(points)
        if last:
            return
        await anyio.sleep(POLL_S)
