"""What the system metrics cost: one sample, and a training loop sampled far more often than
the default against the same loop unsampled.

1. One `SystemSampler.sample()`: of this process (what local and bridge runs sample) and of a
   script's session (a leader and three workers: a scan of /proc), in microseconds, and as a
   share of one core at the default interval (10 s).
2. The trainer's loop (`trainer.loop.run_training`, the demo spec, a per-step loss every step
   into a queue sink, as in bench/trainer_overhead.py) with a `SystemMonitor` sampling this
   process every `--interval` seconds (default 0.1: a hundred times the default rate) on its
   own thread, against the same loop without one. Rounds alternate the order; both are timed in
   process CPU seconds, which include the sampler thread's own work. Target: median ratio
   <= 1.01 at 100x the default rate.
Usage: python bench/system_overhead.py [--pairs 7] [--epochs 10] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))

from bench.trainer_overhead import QueueSink
from trainer import TrainerOptions, TrainingSpec
from trainer.loop import run_training
from training_mcp.points import MetricPoint
from training_mcp.system import DEFAULT_INTERVAL_S, SystemMonitor, SystemSampler

WORKER = "import time; time.sleep(600)"
LEADER = (
    "import subprocess, sys, time\n"
    f"procs = [subprocess.Popen([sys.executable, '-c', {WORKER!r}]) for _ in range(3)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def per_sample_us(sampler: SystemSampler, number: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per sample: the wall time includes the kernel's /proc work."""
    sampler.sample()
    cpu = time.process_time()
    wall = timeit.timeit(sampler.sample, number=number)
    return 1e6 * wall / number, 1e6 * (time.process_time() - cpu) / number


def sample_costs() -> list[tuple[str, tuple[float, float], int]]:
    rows = [("this process", per_sample_us(SystemSampler(gpu=None), 2000), 1)]
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        leader.stdout.readline()
        procs = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
        rows.append(
            (
                f"a script's session (4 processes; {procs} on the host)",
                per_sample_us(SystemSampler(leader.pid, group=True, gpu=None), 200),
                4,
            )
        )
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()
        if leader.stdout is not None:
            leader.stdout.close()
    return rows


def train(spec: TrainingSpec, interval_s: float | None) -> float:
    """Process CPU seconds of one run, sampled every `interval_s` (None: not at all)."""
    sink = QueueSink()
    samples: list[list[MetricPoint]] = []
    start = time.process_time()
    if interval_s is None:
        run_training(spec, sink, options=TrainerOptions())
    else:
        with SystemMonitor(SystemSampler(gpu=None), samples.append, interval_s):
            run_training(spec, sink, options=TrainerOptions())
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print("## One sample\n")
    print("| what is sampled | wall us per sample | CPU us per sample | CPU share at 10 s |")
    print("|---|---:|---:|---:|")
    for label, (wall, cpu), _ in sample_costs():
        share = cpu / 1e6 / DEFAULT_INTERVAL_S
        print(f"| {label} | {wall:.0f} | {cpu:.0f} | {100 * share:.4f}% of a core |")

    spec = TrainingSpec(epochs=args.epochs, log_every_n_steps=1, device="cpu")  # the demo
    train(spec, None)  # warm-up: torch's first run pays for lazy initialisation
    ratios = []
    for i in range(args.pairs):
        order: list[float | None] = [None, args.interval] if i % 2 == 0 else [args.interval, None]
        timed = {interval: train(spec, interval) for interval in order}
        ratios.append(timed[args.interval] / timed[None])
    print(f"\n## The loop sampled every {args.interval:g} s against the loop unsampled\n")
    print(f"{args.pairs} pairs of {args.epochs} epochs, process CPU seconds, torch threads "
          f"{args.threads}\n")  # fmt: skip
    print("| median ratio | min | max | target |")
    print("|---:|---:|---:|---:|")
    print(f"| {statistics.median(ratios):.4f} | {min(ratios):.4f} | {max(ratios):.4f} | <= 1.01 |")


if __name__ == "__main__":
    main()
