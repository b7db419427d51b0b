"""System metrics: a run's CPU, memory and GPU, sampled every few seconds as `system/...` points.

    sampler = SystemSampler()                 # this process; SystemSampler(pid, group=True): a
    values = sampler.sample()                 # script's whole process session
    # {"cpu_percent": 97.5, "rss_mb": 812.4, "mem_percent": 41.2, "host_cpu_percent": 55.0,
    #  "gpu_util": 12.0, "gpu_mem_mb": 30211.0, "gpu_mem_percent": 21.4}

Standard library only. CPU and memory come from `/proc` (Linux); elsewhere only this process's
CPU time is known. GPU readings come from NVIDIA's management library through `pynvml` (the
`nvidia-ml-py` package, an optional extra), imported only when a sampler is made: absent, or
without a driver, there are simply no GPU metrics. The GPU readings are those of the devices on
which NVML lists one of the run's processes, so a CPU-only run on a GPU host reports none.

- `cpu_percent`: CPU time of the run's processes over the interval, 100 = one core busy.
- `rss_mb`: their resident memory. `mem_percent`: memory in use on the host, or in the process's
  cgroup when that has a lower limit, in percent of the limit (the nearness of an OOM kill).
- `host_cpu_percent`: the whole host's CPU in use, 100 = every core busy.
- `gpu_util`: mean utilisation of the run's devices; `gpu_mem_mb`: memory used on them;
  `gpu_mem_percent`: the fullest of them.

`SystemMonitor` samples on a daemon thread and hands each sample's points to a callback (the host
bridge uses it); the server drives a sampler from its event loop (`mcp_server.core.system`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from training_mcp.points import MetricPoint, system_points

__all__ = [
    "DEFAULT_INTERVAL_S",
    "GpuReader",
    "GpuReading",
    "SystemMonitor",
    "SystemSampler",
    "nvml_reader",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
_MB = 1024 * 1024
_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device as NVML sees it: utilisation, memory, and the processes using it."""

    index: int
    util_percent: float
    mem_used_mb: float
    mem_total_mb: float
    pids: frozenset[int]


class GpuReader(Protocol):
    """Where GPU readings come from: NVML on a GPU host (`nvml_reader`), fixed ones in tests."""

    def read(self) -> list[GpuReading]: ...


class _Nvml:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._handles = [
            nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())
        ]

    def read(self) -> list[GpuReading]:
        nvml, readings = self._nvml, []
        for index, handle in enumerate(self._handles):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            pids: set[int] = set()
            for query in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                with contextlib.suppress(nvml.NVMLError):
                    pids.update(p.pid for p in query(handle))
            readings.append(
                GpuReading(
                    index=index,
                    util_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    mem_used_mb=memory.used / _MB,
                    mem_total_mb=memory.total / _MB,
                    pids=frozenset(pids),
                )
            )
        return readings


def nvml_reader() -> GpuReader | None:
    """NVML's readings of this host's GPUs, or None where `pynvml` or a driver is missing."""
    try:
        import pynvml  # type: ignore[import-untyped, import-not-found, unused-ignore]  # an extra

        pynvml.nvmlInit()
        return _Nvml(pynvml)
    except Exception as exc:  # ImportError, or NVMLError: no library, no driver, no device
        log.debug("no GPU metrics: %s", exc)
        return None


@dataclass(frozen=True, slots=True)
class _Proc:
    key: tuple[int, int]  # (pid, start time): a pid reused by a new process is a new process
    sid: int
    cpu_s: float
    rss: int


def _read_stat(pid: int) -> _Proc | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold anything: the fields follow the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: nothing left to measure
        return None
    return _Proc(
        key=(pid, int(fields[19])),
        sid=int(fields[3]),
        cpu_s=(int(fields[11]) + int(fields[12])) / _TICKS,
        rss=int(fields[21]) * _PAGE,
    )


def _session(leader: int) -> list[_Proc]:
    """The processes of the session `leader` started (a script and its workers)."""
    found = []
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            proc = _read_stat(int(entry.name))
            if proc is not None and proc.sid == leader:
                found.append(proc)
    return found


def _host_memory() -> tuple[int, int] | None:
    """(total, available) bytes of the host."""
    try:
        info = {
            line.split(":")[0]: int(line.split()[1]) * 1024
            for line in (_PROC / "meminfo").read_text().splitlines()
            if line.startswith(("MemTotal:", "MemAvailable:"))
        }
        return info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return None


# cgroup v2 and v1 names: (the line's controller, limit, usage, the page cache in memory.stat)
_CGROUPS = (
    ("", "memory.max", "memory.current", "inactive_file"),
    ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
)


@dataclass(frozen=True, slots=True)
class _MemoryCgroup:
    """A memory cgroup with a limit below the host's memory: where to read its usage."""

    folder: Path
    limit: int
    usage_file: str
    cache_key: str

    def used(self) -> int | None:
        """Bytes in use, less the page cache the kernel drops before it kills."""
        try:
            used = int((self.folder / self.usage_file).read_text())
            stat = (self.folder / "memory.stat").read_text().split()
        except (OSError, ValueError):
            return None
        if self.cache_key in stat:
            used -= int(stat[stat.index(self.cache_key) + 1])
        return used


def _memory_cgroup(pid: int, host_total: int) -> _MemoryCgroup | None:
    """The process's memory cgroup, when it limits memory below the host's (found once)."""
    try:
        lines = (_PROC / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for controller, limit_file, usage_file, cache_key in _CGROUPS:
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers != controller:
                continue
            base = _CGROUP / controller if controller else _CGROUP
            # Inside a container the cgroup's own folder is often the mount's root.
            for folder in (base / path.lstrip("/"), base):
                try:
                    limit = (folder / limit_file).read_text().strip()
                except OSError:
                    continue
                if limit == "max" or int(limit) >= host_total:
                    return None
                return _MemoryCgroup(folder, int(limit), usage_file, cache_key)
    return None


def _host_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole host since boot."""
    try:
        fields = [int(x) for x in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


class SystemSampler:
    """The run's processes, sampled on demand: each `sample()` covers the time since the last.

    `pid` (default this process); `group=True` takes every process of the session `pid` leads
    (a script started in a session of its own, with its data-loader workers). `gpu`: where GPU
    readings come from (default NVML when present; None reads no GPU).
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        group: bool = False,
        gpu: GpuReader | Literal["nvml"] | None = "nvml",
    ) -> None:
        self.pid = pid if pid is not None else os.getpid()
        self._group = group
        self._gpu = nvml_reader() if isinstance(gpu, str) else gpu
        self._linux = _PROC.is_dir()
        self._cpu: dict[tuple[int, int], float] = {}
        self._host = _host_cpu() if self._linux else None
        memory = _host_memory() if self._linux else None
        self._cgroup = _memory_cgroup(self.pid, memory[0]) if memory is not None else None
        self._at = time.monotonic()
        self._processes()  # the baseline the first sample's CPU percent is measured from

    def _processes(self) -> list[_Proc] | None:
        """The run's processes now, remembering their CPU times; None off Linux, where only
        this process's own CPU time is known."""
        if not self._linux:
            self._cpu = {(0, 0): sum(os.times()[:2])}
            return None
        if self._group:
            procs = _session(self.pid)
        else:
            own = _read_stat(self.pid)
            procs = [own] if own is not None else []
        self._cpu = {p.key: p.cpu_s for p in procs}
        return procs

    def sample(self) -> dict[str, float]:
        """The readings since the last sample; {} once the run's processes are all gone."""
        now = time.monotonic()
        elapsed, self._at = max(now - self._at, 1e-9), now
        before = self._cpu
        values: dict[str, float] = {}
        procs = self._processes()
        if procs is None:
            values["cpu_percent"] = 100.0 * (self._cpu[(0, 0)] - before[(0, 0)]) / elapsed
            return values
        if not procs:
            return {}
        # A process new since the last sample spent all its CPU time within the interval.
        used = sum(p.cpu_s - before.get(p.key, 0.0) for p in procs)
        values["cpu_percent"] = 100.0 * max(used, 0.0) / elapsed
        values["rss_mb"] = sum(p.rss for p in procs) / _MB
        memory = self._memory_percent()
        if memory is not None:
            values["mem_percent"] = memory
        host = _host_cpu()
        if host is not None and self._host is not None and host[1] > self._host[1]:
            busy, total = host[0] - self._host[0], host[1] - self._host[1]
            values["host_cpu_percent"] = 100.0 * busy / total
        self._host = host
        values.update(self._gpu_values({p.key[0] for p in procs}))
        return values

    def _memory_percent(self) -> float | None:
        """Memory in use in percent of the limit: the host's, or the cgroup's (the nearer)."""
        host = _host_memory()
        if host is None or not host[0]:
            return None
        percent = 100.0 * (host[0] - host[1]) / host[0]
        used = self._cgroup.used() if self._cgroup is not None else None
        if self._cgroup is not None and used is not None:
            percent = max(percent, 100.0 * used / self._cgroup.limit)
        return percent

    def _gpu_values(self, pids: set[int]) -> dict[str, float]:
        if self._gpu is None:
            return {}
        try:
            devices = [d for d in self._gpu.read() if d.pids & pids]
        except Exception as exc:  # a driver hiccup costs one sample's GPU readings, not the run
            log.debug("GPU readings failed: %s", exc)
            return {}
        if not devices:
            return {}
        return {
            "gpu_util": sum(d.util_percent for d in devices) / len(devices),
            "gpu_mem_mb": sum(d.mem_used_mb for d in devices),
            "gpu_mem_percent": max(
                100.0 * d.mem_used_mb / d.mem_total_mb for d in devices if d.mem_total_mb
            ),
        }


class SystemMonitor:
    """Samples every `interval_s` on a daemon thread and hands each sample's points to `emit`;
    `stop()` (or leaving the `with`) takes one last sample, so even a short run has one.

    `epoch()` says the run's last finished epoch, stored with each sample.
    """

    def __init__(
        self,
        sampler: SystemSampler,
        emit: Callable[[list[MetricPoint]], None],
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        epoch: Callable[[], int | None] = lambda: None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: must be more than 0, got {interval_s}")
        self._sampler = sampler
        self._emit = emit
        self._interval_s = interval_s
        self._epoch = epoch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="system-metrics", daemon=True)

    def __enter__(self) -> SystemMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._once()
        self._once()

    def _once(self) -> None:
        try:
            values = self._sampler.sample()
            if values:
                self._emit(system_points(values, at=time.time(), epoch=self._epoch()))
        except Exception:  # sampling must never end a run
            log.exception("system metrics: a sample failed")
