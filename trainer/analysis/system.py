"""What a run's system metrics say: input-bound (the GPU waits while the CPU is saturated) or
near out-of-memory. Pure: samples in, flags with their figures out.

A sample is one reading of the run's processes (`training_mcp.system`), keyed by the metric's
name under `system/`: `cpu_percent` (100 = one core), `host_cpu_percent` (100 = every core),
`mem_percent` (of the host's or the cgroup's limit), `rss_mb`, `gpu_util`, `gpu_mem_mb`,
`gpu_mem_percent`. A run without system samples, or without GPU ones, is judged on what it has:
nothing is said about what was not measured.

- `input_bound`: over the latest `INPUT_WINDOW` samples (at least `MIN_SAMPLES`), the median GPU
  utilisation is below `GPU_IDLE_PCT` while the median CPU use of the run's processes is at least
  `CPU_SATURATED_PCT` of one core (a Python loop preparing batches on one core) or the host's CPU
  is that busy. More data-loader workers, pinned memory, or a lighter input pipeline help.
- `near_oom`: in the latest sample, memory in use is at least `MEM_NEAR_PCT` of the limit, or a
  GPU the run uses is at least `GPU_MEM_NEAR_PCT` full (a caching allocator keeps what it
  reserved, so a full GPU is common and the threshold is higher).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Literal

from trainer.analysis.models import LossAnalysis, LossFlag

__all__ = [
    "CPU_SATURATED_PCT",
    "GPU_IDLE_PCT",
    "GPU_MEM_NEAR_PCT",
    "INPUT_WINDOW",
    "MEM_NEAR_PCT",
    "MIN_SAMPLES",
    "SystemFlag",
    "SystemSample",
    "SystemWindow",
    "system_flags",
    "with_system",
]

INPUT_WINDOW = 6
MIN_SAMPLES = 3
GPU_IDLE_PCT = 30.0
CPU_SATURATED_PCT = 90.0
MEM_NEAR_PCT = 90.0
GPU_MEM_NEAR_PCT = 95.0

SystemFlagName = Literal["input_bound", "near_oom"]


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One reading: when (ms since the Unix epoch), the run's last finished epoch then, values."""

    time_ms: int
    epoch: int | None
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SystemFlag:
    name: SystemFlagName
    since_epoch: int
    evidence: str
    reason: str


class SystemWindow:
    """The latest samples of a run, merged by time from points in any grouping."""

    def __init__(self, size: int = INPUT_WINDOW) -> None:
        self._size = size
        self._samples: dict[int, tuple[int | None, dict[str, float]]] = {}

    def add(self, name: str, time_ms: int, value: float, epoch: int | None = None) -> None:
        sample = self._samples.get(time_ms)
        if sample is None:
            if len(self._samples) >= self._size and time_ms < min(self._samples):
                return  # older than everything kept
            sample = self._samples[time_ms] = (epoch, {})
            if len(self._samples) > self._size:
                del self._samples[min(self._samples)]
        elif sample[0] is None and epoch is not None:
            sample = self._samples[time_ms] = (epoch, sample[1])
        sample[1][name] = value

    def samples(self) -> list[SystemSample]:
        return [
            SystemSample(t, epoch, dict(values))
            for t, (epoch, values) in sorted(self._samples.items())
        ]

    def __bool__(self) -> bool:
        return bool(self._samples)


def _since(samples: Sequence[SystemSample], holds: Iterable[bool]) -> int:
    """The epoch of the first sample of the latest unbroken run of samples where it holds."""
    first = samples[-1]
    for sample, ok in zip(reversed(samples), reversed(list(holds)), strict=True):
        if not ok:
            break
        first = sample
    return first.epoch or 0


def _input_bound(samples: Sequence[SystemSample]) -> SystemFlag | None:
    recent = [s for s in samples if "gpu_util" in s.values][-INPUT_WINDOW:]
    if len(recent) < MIN_SAMPLES:
        return None
    gpu = median(s.values["gpu_util"] for s in recent)
    cpu = median(s.values.get("cpu_percent", 0.0) for s in recent)
    host = median(s.values.get("host_cpu_percent", 0.0) for s in recent)
    if gpu >= GPU_IDLE_PCT or max(cpu, host) < CPU_SATURATED_PCT:
        return None
    busy = (
        f"its processes' CPU at {cpu:.0f}% (100% = one core)"
        if cpu >= CPU_SATURATED_PCT
        else f"the host's CPU {host:.0f}% busy"
    )
    figures = f"GPU utilisation {gpu:.0f}% (median of {len(recent)} samples) while {busy}"
    holds = [
        s.values.get("gpu_util", 100.0) < GPU_IDLE_PCT
        and max(s.values.get("cpu_percent", 0.0), s.values.get("host_cpu_percent", 0.0))
        >= CPU_SATURATED_PCT
        for s in recent
    ]
    return SystemFlag(
        "input_bound",
        _since(recent, holds),
        figures,
        f"Input-bound: {figures}; more data-loader workers or a lighter input pipeline would "
        "feed the GPU.",
    )


def _near_oom(samples: Sequence[SystemSample]) -> SystemFlag | None:
    latest = samples[-1].values
    parts = []
    mem, gpu_mem = latest.get("mem_percent"), latest.get("gpu_mem_percent")
    if mem is not None and mem >= MEM_NEAR_PCT:
        rss = latest.get("rss_mb")
        held = f", the run's processes hold {rss:.0f} MB" if rss is not None else ""
        parts.append(f"memory {mem:.1f}% of its limit in use{held}")
    if gpu_mem is not None and gpu_mem >= GPU_MEM_NEAR_PCT:
        used = latest.get("gpu_mem_mb")
        amount = f" ({used:.0f} MB)" if used is not None else ""
        parts.append(f"GPU memory {gpu_mem:.1f}% full{amount}")
    if not parts:
        return None

    def near(s: SystemSample) -> bool:
        return (
            s.values.get("mem_percent", 0.0) >= MEM_NEAR_PCT
            or s.values.get("gpu_mem_percent", 0.0) >= GPU_MEM_NEAR_PCT
        )

    figures = " and ".join(parts)
    return SystemFlag(
        "near_oom",
        _since(samples, [near(s) for s in samples]),
        figures,
        f"Near out-of-memory: {figures}; a smaller batch or model would leave room.",
    )


def system_flags(samples: Sequence[SystemSample]) -> list[SystemFlag]:
    """The system flags that hold now, from a run's latest samples in time order."""
    if not samples:
        return []
    return [f for f in (_input_bound(samples), _near_oom(samples)) if f is not None]


def with_system(analysis: LossAnalysis, samples: Sequence[SystemSample]) -> LossAnalysis:
    """`analysis` with the system flags added to its flags and their reasons to its reasons."""
    flags = system_flags(samples)
    if not flags:
        return analysis
    return analysis.model_copy(
        update={
            "flags": [
                *analysis.flags,
                *(
                    LossFlag(name=f.name, since_epoch=f.since_epoch, evidence=f.evidence)
                    for f in flags
                ),
            ],
            "reasons": [*analysis.reasons, *(f.reason for f in flags)],
        }
    )
