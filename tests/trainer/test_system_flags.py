"""The system flags on fixed series: input-bound and near out-of-memory, with their figures."""

from __future__ import annotations

from trainer.analysis import EpochMetrics, analyze_loss
from trainer.analysis.system import SystemSample, SystemWindow, system_flags, with_system


def _samples(*values: dict[str, float], first_epoch: int = 1) -> list[SystemSample]:
    return [
        SystemSample(time_ms=10_000 * i, epoch=first_epoch + i, values=v)
        for i, v in enumerate(values)
    ]


def test_an_idle_gpu_beside_a_saturated_core_is_input_bound_since_the_episode_began() -> None:
    busy_gpu = {"gpu_util": 95.0, "cpu_percent": 100.0}
    starved = {"gpu_util": 8.0, "cpu_percent": 99.0, "host_cpu_percent": 40.0}
    (flag,) = system_flags(_samples(busy_gpu, busy_gpu, starved, starved, starved))
    assert flag.name == "input_bound"
    assert flag.since_epoch == 3
    assert "GPU utilisation 8% (median of 5 samples)" in flag.evidence
    assert "CPU at 99% (100% = one core)" in flag.evidence
    assert flag.reason.startswith("Input-bound: GPU utilisation 8%")


def test_a_busy_host_counts_as_saturated_too() -> None:
    starved = {"gpu_util": 5.0, "cpu_percent": 40.0, "host_cpu_percent": 97.0}
    (flag,) = system_flags(_samples(starved, starved, starved))
    assert "the host's CPU 97% busy" in flag.evidence


def test_input_bound_needs_a_busy_cpu_an_idle_gpu_and_three_gpu_samples() -> None:
    assert system_flags(_samples(*[{"gpu_util": 5.0, "cpu_percent": 30.0}] * 6)) == []
    assert system_flags(_samples(*[{"gpu_util": 80.0, "cpu_percent": 100.0}] * 6)) == []
    assert system_flags(_samples(*[{"gpu_util": 5.0, "cpu_percent": 100.0}] * 2)) == []
    # A CPU-only run: saturated, but nothing says the GPU waits.
    assert system_flags(_samples(*[{"cpu_percent": 100.0, "rss_mb": 900.0}] * 6)) == []


def test_memory_near_its_limit_is_near_oom_with_what_the_run_holds() -> None:
    (flag,) = system_flags(
        _samples({"mem_percent": 60.0}, {"mem_percent": 93.4, "rss_mb": 11_200.0}, first_epoch=7)
    )
    assert flag.name == "near_oom" and flag.since_epoch == 8
    assert flag.evidence == "memory 93.4% of its limit in use, the run's processes hold 11200 MB"


def test_a_full_gpu_is_near_oom_and_a_recovered_one_is_not() -> None:
    full = {"gpu_mem_percent": 97.0, "gpu_mem_mb": 77_600.0, "mem_percent": 20.0}
    (flag,) = system_flags(_samples(full))
    assert flag.evidence == "GPU memory 97.0% full (77600 MB)"
    assert system_flags(_samples(full, {"gpu_mem_percent": 60.0, "mem_percent": 20.0})) == []


def test_the_analysis_gains_the_flags_and_reasons_only_when_system_series_say_so() -> None:
    history = [EpochMetrics(e, {"train_loss": 1.0 / e, "val_loss": 1.1 / e}) for e in range(1, 8)]
    analysis = analyze_loss(history)
    assert with_system(analysis, []) == analysis
    calm = _samples(*[{"cpu_percent": 50.0, "mem_percent": 30.0, "gpu_util": 90.0}] * 4)
    assert with_system(analysis, calm) == analysis
    pressed = _samples(*[{"cpu_percent": 100.0, "gpu_util": 3.0, "mem_percent": 95.0}] * 4)
    judged = with_system(analysis, pressed)
    assert [f.name for f in judged.flags] == [
        *(f.name for f in analysis.flags),
        "input_bound",
        "near_oom",
    ]
    assert judged.reasons[: len(analysis.reasons)] == analysis.reasons
    assert any(r.startswith("Near out-of-memory: memory 95.0%") for r in judged.reasons)
    assert judged.verdict == analysis.verdict and judged.recommendation == analysis.recommendation


def test_the_window_merges_points_by_time_and_keeps_the_newest() -> None:
    window = SystemWindow(size=3)
    for t in range(5):
        window.add("cpu_percent", t, 10.0 * t)
    window.add("rss_mb", 4, 512.0, epoch=9)
    window.add("cpu_percent", 0, 1.0)  # older than everything kept
    samples = window.samples()
    assert [s.time_ms for s in samples] == [2, 3, 4]
    assert samples[-1].values == {"cpu_percent": 40.0, "rss_mb": 512.0}
    assert samples[-1].epoch == 9
