"""What the trainer's metrics cost: the loop against a bare PyTorch loop, and the demo's throughput.

The loop runs with a per-step loss logged every step into a sink that does what the server's does
(a thread-safe hand-off, here `queue.SimpleQueue.put`); the bare loop trains the same model on the
same data, seed, batches and optimizer, and evaluates val_loss once an epoch, with no metrics at
all. The loop also runs without step records ("no steps") to show what they cost. Each round
runs the three on three threads in lock-step, one epoch each in turn (the order reversed every
other round), so drift in the machine's load hits all alike; each is timed in its own thread's
CPU seconds, which other processes on a shared machine disturb less than wall time. glibc
malloc's thresholds are pinned first (`--default-malloc` leaves them): left moving, they made
the same ~1M-model run pay 31k to 285k page faults here, a spread larger than the bound; each
round prints its minor page faults. Two models: the demo spec (~134k parameters; target median
ratio <= 1.02) and the same spec with hidden layers [1000, 1000] (~1M parameters, a realistic
size; target <= 1.01).

CPU time on a shared machine drifts by a few percent from run to run, as much as the bound
itself. `--instructions` adds a count that does not: the demo spec's loop and bare loop each run
once under valgrind's callgrind, in their own process, which counts the instructions of one whole
run after a warm-up run (the window opens and closes on two marker calls, so imports and
warm-up are left out). It shows the metrics' own work; time also pays for what instructions do
not show (caches, branch predictors shared with the kernels), so it is a floor of the CPU-time
ratio, not a stand-in for it. Needs valgrind on PATH; takes several minutes.
Usage: python bench/trainer_overhead.py [--pairs 11] [--epochs 20] [--large-epochs 4] [--threads 1]
       [--instructions] [--instruction-epochs 10]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import EpochRecord, StepRecord, TrainerOptions, TrainingSpec
from trainer.datasets import load_data
from trainer.loop import run_training
from trainer.models import build_mlp
from trainer.spec import ModelSpec


class QueueSink:
    """The server's sink in miniature: hand every record to another thread without waiting."""

    def __init__(self) -> None:
        self.records: queue.SimpleQueue[EpochRecord | StepRecord] = queue.SimpleQueue()

    def on_epoch(self, record: EpochRecord) -> None:
        self.records.put(record)

    def on_step(self, record: StepRecord) -> None:
        self.records.put(record)


def bare_loop(spec: TrainingSpec, after_epoch: Callable[[], object] | None = None) -> None:
    """The same training as a bare PyTorch loop: no metrics beyond one val_loss an epoch.
    `after_epoch` runs at the end of each epoch, where the loop hands its record to the sink."""
    torch.manual_seed(spec.seed)
    data = load_data(spec, TrainerOptions())
    model = build_mlp(spec.model, data.n_features, data.n_outputs, seed=spec.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    x, y = data.train[:]
    assert data.val is not None
    val_x, val_y = data.val[:]
    generator = torch.Generator().manual_seed(spec.seed + 2)
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), spec.batch_size):
            index = order[start : start + spec.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimizer.step()
        model.eval()
        with torch.no_grad():
            total = sum(
                F.cross_entropy(
                    model(val_x[i : i + spec.batch_size]), val_y[i : i + spec.batch_size]
                )
                * len(val_y[i : i + spec.batch_size])
                for i in range(0, len(val_x), spec.batch_size)
            )
            float(total)
        if after_epoch is not None:
            after_epoch()


class Baton:
    """Turns between threads: each runs until it passes the baton on, then waits for it back."""

    def __init__(self, order: list[int]) -> None:
        self._cond = threading.Condition()
        self._live = list(order)
        self._turn = order[0]

    def wait(self, me: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == me)

    def pass_on(self, me: int, *, done: bool = False) -> None:
        with self._cond:
            at = self._live.index(me)
            if done:  # the next in line moves up into this one's place
                self._live.remove(me)
                self._turn = self._live[at % len(self._live)] if self._live else -1
            else:
                self._turn = self._live[(at + 1) % len(self._live)]
            self._cond.notify_all()
        if not done:
            self.wait(me)


class HandOffSink(QueueSink):
    """QueueSink that passes the baton on after each epoch record."""

    def __init__(self, baton: Baton, me: int) -> None:
        super().__init__()
        self._baton, self._me = baton, me

    def on_epoch(self, record: EpochRecord) -> None:
        super().on_epoch(record)
        self._baton.pass_on(self._me)


def lock_step(spec: TrainingSpec, quiet: TrainingSpec, order: list[int]) -> list[tuple[float, int]]:
    """One round: loop (0), loop without step records (1) and bare (2), each on its own thread,
    one epoch each in turn (`order`); each one's thread CPU seconds and minor page faults."""
    baton = Baton(order)
    out: dict[int, tuple[float, int]] = {}

    def work(me: int) -> None:
        baton.wait(me)
        started, faults = time.thread_time(), _thread_faults()
        try:
            if me == 2:
                bare_loop(spec, after_epoch=lambda: baton.pass_on(2))
            else:
                run_training(spec if me == 0 else quiet, HandOffSink(baton, me))
            out[me] = (time.thread_time() - started, _thread_faults() - faults)
        finally:  # a contender that raises must not leave the others waiting for its turn
            baton.pass_on(me, done=True)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(out) < 3:
        raise RuntimeError(f"contender(s) {sorted({0, 1, 2} - out.keys())} raised; see above")
    return [out[0], out[1], out[2]]


def _thread_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def compare(label: str, spec: TrainingSpec, pairs: int, threads: int) -> float:
    """Loop (a step record every step), loop without step records, and bare, in lock-step
    rounds; prints each round and returns the median ratio loop/bare."""
    quiet = spec.model_copy(update={"log_every_n_steps": 0})  # epoch records only
    lock_step(spec, quiet, [0, 1, 2])  # warm-up: imports, allocator, kernels
    rows = [lock_step(spec, quiet, [0, 1, 2] if i % 2 == 0 else [2, 1, 0]) for i in range(pairs)]
    sink = QueueSink()
    run_training(spec, sink)
    model = build_mlp(spec.model, 8, 2, seed=0)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"\ntrainer overhead, {label}: hidden {list(spec.model.hidden_sizes)} "
        f"(~{params:,} parameters), {spec.epochs} epochs, a step record every step "
        f"({sink.records.qsize()} records a run into queue.SimpleQueue), {threads} CPU "
        f"thread(s), torch {torch.__version__}; thread CPU seconds, epochs in lock-step"
    )
    header = ("run", "loop", "no steps", "bare", "loop/bare", "no steps/bare", "minor faults")
    print("{:>4} {:>7} {:>9} {:>7} {:>10} {:>14}  {}".format(*header))
    for run_no, ((loop_s, f0), (quiet_s, f1), (bare_s, f2)) in enumerate(rows, start=1):
        print(
            f"{run_no:>4} {loop_s:>7.3f} {quiet_s:>9.3f} {bare_s:>7.3f} {loop_s / bare_s:>10.3f} "
            f"{quiet_s / bare_s:>14.3f}  {f0:,} / {f1:,} / {f2:,}"
        )
    ratio = statistics.median(r[0][0] / r[2][0] for r in rows)
    quiet_ratio = statistics.median(r[1][0] / r[2][0] for r in rows)
    total = sum(r[0][0] for r in rows) / sum(r[2][0] for r in rows)
    print(f"median ratio loop/bare: {ratio:.3f}; total loop / total bare: {total:.3f}")
    print(f"median ratio loop without step records/bare: {quiet_ratio:.3f}")
    return ratio


def pin_allocator() -> bool:
    """Fix glibc malloc's thresholds so freed tensors stay in the heap: by default its mmap
    threshold moves as it goes, so the same ~1M-model run paid 31k to 285k page faults here by
    what ran before it, a spread of 10-25% in its time that hides a 1% overhead."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    pinned = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's most: 32 MiB
    return bool(pinned and libc.mallopt(m_trim_threshold, 1 << 30))


CONTENDERS = ("loop", "bare")


def counted_run(kind: str, epochs: int) -> None:
    """The child of `--instructions`: a warm-up run, then one run between the two marker calls
    callgrind opens and closes its window on (`getpgid`, `getsid`: called nowhere else here)."""
    spec = TrainingSpec(epochs=epochs, log_every_n_steps=1, device="cpu")
    run: Callable[[], object] = (
        (lambda: run_training(spec, QueueSink())) if kind == "loop" else (lambda: bare_loop(spec))
    )
    run()
    os.getpgid(0)
    run()
    os.getsid(0)


def count_instructions(epochs: int, threads: int) -> float | None:
    """Instructions of one loop run and one bare run of the demo spec (both at once, a process
    each), printed with their ratio; returns it, or None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("\ninstructions: valgrind is not on PATH; skipped")
        return None
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        children = {
            kind: subprocess.Popen(
                [
                    valgrind,
                    "--tool=callgrind",
                    "--zero-before=getpgid",
                    "--dump-before=getsid",
                    f"--callgrind-out-file={tmp}/{kind}",
                    sys.executable,
                    __file__,
                    "--count-child",
                    kind,
                    "--instruction-epochs",
                    str(epochs),
                    "--threads",
                    str(threads),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for kind in CONTENDERS
        }
        counts = {}
        for kind, child in children.items():
            if child.wait() != 0:
                raise RuntimeError(f"the {kind} run under callgrind exited with {child.returncode}")
            counts[kind] = _window_total(Path(tmp) / f"{kind}.1")
    ratio = counts["loop"] / counts["bare"]
    print(
        f"\ninstructions (callgrind), the demo spec, {epochs} epochs, a step record every step, "
        f"one run after a warm-up run:"
    )
    for kind in CONTENDERS:
        print(f"{kind:>5} {counts[kind]:>15,}")
    print(f"loop/bare: {ratio:.4f}")
    return ratio


def _window_total(dump: Path) -> int:
    """The instruction total of a callgrind dump (its `summary:` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary line; did the run reach its second marker?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=11, help="alternating rounds (>= 5)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--large-epochs", type=int, default=4, help="epochs of the ~1M model")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (valgrind)"
    )
    parser.add_argument("--instruction-epochs", type=int, default=10)
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc malloc's thresholds moving"
    )
    parser.add_argument("--count-child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_malloc and not args.count_child:
        print(f"glibc malloc thresholds pinned: {pin_allocator()}")
    if args.count_child:
        counted_run(args.count_child, args.instruction_epochs)
        return

    demo_spec = TrainingSpec(epochs=args.epochs, log_every_n_steps=1, device="cpu")
    large = demo_spec.model_copy(
        update={"epochs": args.large_epochs, "model": ModelSpec(hidden_sizes=(1000, 1000))}
    )
    tiny_ratio = compare("the demo spec", demo_spec, args.pairs, args.threads)
    large_ratio = compare("a model of realistic size", large, args.pairs, args.threads)
    print(
        f"\nmedian loop/bare: demo {tiny_ratio:.3f} (target <= 1.02: "
        f"{'ok' if tiny_ratio <= 1.02 else 'ABOVE TARGET'}), ~1M parameters {large_ratio:.3f} "
        f"(target <= 1.01: {'ok' if large_ratio <= 1.01 else 'ABOVE TARGET'})"
    )

    sink = QueueSink()
    demo = TrainingSpec(device="cpu")
    started = time.perf_counter()
    run_training(demo, sink)
    wall = time.perf_counter() - started
    drained = [sink.records.get() for _ in range(sink.records.qsize())]
    epochs = [r for r in drained if isinstance(r, EpochRecord)]
    n_train = len(load_data(demo, TrainerOptions()).train[:][0])
    print(
        f"default demo spec on CPU: {statistics.median(r.samples_per_s for r in epochs):,.0f} "
        f"samples/s while training (median epoch), {demo.epochs * n_train / wall:,.0f} samples/s "
        f"over the whole run incl. set-up and evaluation ({wall:.2f} s for {demo.epochs} epochs)"
    )
    if args.instructions:
        count_instructions(args.instruction_epochs, args.threads)


if __name__ == "__main__":
    main()
