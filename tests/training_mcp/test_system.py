"""The system sampler on real processes (this one, a child script's session) and GPU readings
through the reader seam (no GPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from training_mcp import system
from training_mcp.points import (
    MetricPoint,
    is_epoch_metric,
    is_step_metric,
    is_system_metric,
    system_points,
)
from training_mcp.system import (
    GpuReading,
    SystemMonitor,
    SystemSampler,
    nvml_reader,
)

LINUX = Path("/proc/self/stat").exists()
needs_proc = pytest.mark.skipif(not LINUX, reason="reads /proc")


class FixedGpus:
    """Fixed NVML readings: what a GPU host would report."""

    def __init__(self, *readings: GpuReading) -> None:
        self.readings = list(readings)

    def read(self) -> list[GpuReading]:
        return self.readings


def _busy(cpu_s: float) -> None:
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        pass


def test_system_points_are_indexed_by_time_in_milliseconds_and_keep_their_epoch() -> None:
    points = system_points({"cpu_percent": 97.5, "rss_mb": 512}, at=1_700_000_000.25, epoch=3)
    assert [(p.name, p.step, p.value, p.epoch) for p in points] == [
        ("system/cpu_percent", 1_700_000_000_250, 97.5, 3),
        ("system/rss_mb", 1_700_000_000_250, 512.0, 3),
    ]
    assert is_system_metric("system/rss_mb") and not is_epoch_metric("system/rss_mb")
    assert is_epoch_metric("val_loss") and not is_epoch_metric("step/train_loss")
    assert not is_step_metric("system/rss_mb")


@needs_proc
def test_a_busy_process_reads_its_cpu_time_and_resident_memory() -> None:
    sampler = SystemSampler(gpu=None)
    _busy(0.2)
    values = sampler.sample()
    # 0.2 s of CPU in at most a few seconds of wall time, however loaded the machine is.
    assert values["cpu_percent"] > 2.0
    with open("/proc/self/statm") as statm:
        rss_mb = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert values["rss_mb"] == pytest.approx(rss_mb, rel=0.2)
    assert 0.0 < values["mem_percent"] <= 100.0
    assert not {"gpu_util", "gpu_mem_mb", "gpu_mem_percent"} & values.keys()


@needs_proc
def test_a_script_session_is_sampled_whole_children_included(tmp_path: Path) -> None:
    # The leader starts a child that holds 64 MB; both belong to the leader's session.
    child = (
        "import sys, time; x = bytearray(64 * 2**20); print('ready', flush=True); time.sleep(60)"
    )
    leader = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=sys.stdout)\n"
        "p.wait()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", leader], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        values = SystemSampler(proc.pid, group=True, gpu=None).sample()
        assert values["rss_mb"] > 64
        alone = SystemSampler(proc.pid, gpu=None).sample()
        assert alone["rss_mb"] < values["rss_mb"] - 50
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    gone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    gone.wait()
    assert SystemSampler(gone.pid, group=True, gpu=None).sample() == {}


@needs_proc
def test_gpu_readings_are_those_of_the_devices_the_run_uses() -> None:
    me = os.getpid()
    gpus = FixedGpus(
        GpuReading(
            0, util_percent=10.0, mem_used_mb=30_000, mem_total_mb=80_000, pids=frozenset({me})
        ),
        GpuReading(
            1, util_percent=30.0, mem_used_mb=76_000, mem_total_mb=80_000, pids=frozenset({me, 7})
        ),
        GpuReading(
            2, util_percent=99.0, mem_used_mb=1_000, mem_total_mb=80_000, pids=frozenset({7})
        ),
    )
    values = SystemSampler(gpu=gpus).sample()
    assert values["gpu_util"] == pytest.approx(20.0)
    assert values["gpu_mem_mb"] == pytest.approx(106_000)
    assert values["gpu_mem_percent"] == pytest.approx(95.0)
    others = FixedGpus(GpuReading(0, 99.0, 1_000, 80_000, frozenset({me + 1})))
    assert "gpu_util" not in SystemSampler(gpu=others).sample()


def test_without_nvml_there_are_no_gpu_readings_and_no_error() -> None:
    # No NVIDIA driver here: with or without pynvml installed, the reader is simply absent.
    assert nvml_reader() is None


@needs_proc
def test_the_monitor_emits_every_interval_and_once_more_when_stopped() -> None:
    batches: list[list[str]] = []
    two = threading.Event()

    def emit(points: list[MetricPoint]) -> None:
        batches.append([p.name for p in points])
        if len(batches) >= 2:
            two.set()

    with SystemMonitor(SystemSampler(gpu=None), emit, 0.01, epoch=lambda: 4):
        assert two.wait(30)
    count = len(batches)
    assert count >= 3  # the last sample, taken at the stop
    assert {"system/cpu_percent", "system/rss_mb"} <= set(batches[-1])
    with pytest.raises(ValueError, match="interval_s"):
        SystemMonitor(SystemSampler(gpu=None), emit, 0)


@needs_proc
def test_a_cgroup_limit_below_the_hosts_memory_is_the_limit_memory_is_measured_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cgroup v2 folder as the kernel shows it, where this process's cgroup file points.
    lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    unified = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
    if unified is None:
        pytest.skip("no cgroup v2 line for this process")
    folder = tmp_path / unified.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    gib = 2**30
    (folder / "memory.max").write_text(f"{gib}\n")
    (folder / "memory.current").write_text(f"{gib * 95 // 100 + 50 * 2**20}\n")
    (folder / "memory.stat").write_text(f"anon 1\ninactive_file {50 * 2**20}\nactive_file 2\n")
    monkeypatch.setattr(system, "_CGROUP", tmp_path)
    values = SystemSampler(gpu=None).sample()
    assert values["mem_percent"] == pytest.approx(95.0, abs=0.01)  # the page cache left out
