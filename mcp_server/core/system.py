"""System metrics of the server's own runs: local runs (this process) and script runs (the
script's process session), sampled from the event loop every few seconds and stored as
`system/...` points through the one ingestion path (`training_mcp.system` reads them).

A sample is taken in a worker thread (a `/proc` scan and NVML calls, well under a millisecond
for one process, a few for a script's session), never in the training thread, so training pays
nothing for it (`bench/system_overhead.py`). Each sample carries the run's last finished epoch,
which the analysis uses to say since when a condition holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from mcp_server.config import ServerConfig
from mcp_server.core.errors import ServiceError
from mcp_server.core.ingest import Ingestor
from storage import StorageError, get_operation
from training_mcp.points import SYSTEM_PREFIX, MetricPoint, system_points
from training_mcp.system import GpuReader, SystemSampler, nvml_reader

__all__ = ["RunSampling", "follow_system", "run_sampling"]

log = logging.getLogger(__name__)


async def follow_system(
    sampler: SystemSampler,
    interval_s: float,
    store: Callable[[list[MetricPoint]], Awaitable[None]],
    epoch: Callable[[], Awaitable[int | None]],
    until: anyio.Event,
    *,
    last: bool,
) -> None:
    """Sample every `interval_s` until `until` is set; `last`: take one more sample then (a
    local run's process outlives its training; a script's is gone)."""
    while True:
        with anyio.move_on_after(interval_s):
            await until.wait()
        if until.is_set() and not last:
            return
        values = await anyio.to_thread.run_sync(sampler.sample)
        if values:
            await store(system_points(values, at=time.time(), epoch=await epoch()))
        if until.is_set():
            return


class _Gpus:
    """The GPU reader, opened by the first run sampled: NVML's import and initialisation took
    25-80 ms of every start, GPU or none, and a server may never run anything."""

    def __init__(self, setting: GpuReader | Literal["nvml"] | None) -> None:
        self._setting = setting
        self._lock = anyio.Lock()
        self._reader: GpuReader | None = None
        self._opened = False

    async def reader(self) -> GpuReader | None:
        async with self._lock:
            if not self._opened:
                setting = self._setting
                opened = (
                    await anyio.to_thread.run_sync(nvml_reader) if setting == "nvml" else setting
                )
                self._reader, self._opened = opened, True
        return self._reader


@dataclass(frozen=True)
class RunSampling:
    """How this server samples its runs: every `interval_s`, GPUs read through `gpus`."""

    ingestor: Ingestor
    interval_s: float
    gpus: _Gpus

    async def follow(self, operation_id: str, until: anyio.Event, pid: int | None = None) -> None:
        """Sample a run until `until`: this process (a local run, one last sample at the end),
        or the session script `pid` leads (nothing once it has exited)."""
        gpu = await self.gpus.reader()
        sampler = await anyio.to_thread.run_sync(
            lambda: SystemSampler(pid, group=pid is not None, gpu=gpu)
        )

        async def store(points: list[MetricPoint]) -> None:
            try:
                await self.ingestor.record_system(operation_id, points)
            except (StorageError, ServiceError) as exc:  # e.g. the run ended meanwhile
                log.debug("run %s: %s not stored: %s", operation_id, SYSTEM_PREFIX, exc)

        async def epoch() -> int | None:
            try:
                return (await get_operation(self.ingestor.db, operation_id)).epochs_done
            except StorageError:
                return None

        await follow_system(sampler, self.interval_s, store, epoch, until, last=pid is None)


async def run_sampling(config: ServerConfig, ingestor: Ingestor) -> RunSampling | None:
    """How this server samples its runs, None when `system_interval_s` is 0. NVML, when
    present, is opened once for every run, by the first."""
    if config.system_interval_s <= 0:
        return None
    return RunSampling(ingestor, config.system_interval_s, _Gpus(config.system_gpu))
