"""What the trainer's metrics cost: the loop against a bare PyTorch loop, and the demo's throughput.

The loop runs with a per-step loss logged every step into a sink that does what the server's does
(a thread-safe hand-off, here `queue.SimpleQueue.put`); the bare loop trains the same model on the
same data, seed, batches and optimizer, and evaluates val_loss once an epoch, with no metrics at
all. The loop also runs without step records ("no steps") to show what they cost, and the bare
loop runs twice: the second ("bare again", the control) costs exactly what the first does, so
its ratio shows how far the instrument itself strays from 1.

Each round runs the four on four threads in lock-step, one epoch each in turn (the order reversed
every other round), so drift in the machine's load hits all alike; each turn is timed in its own
thread's CPU seconds, which other processes disturb less than wall time. The figure that counts
is the median, over every epoch after the first of every round, of a loop epoch's time over the
bare epoch's of the same round; set-up (data, model, the first epoch less a steady one) and what
follows the last epoch are printed apart in milliseconds, and whole-run ratios beside them. Two
things made the same epoch's time stray by more than the bound, and are fixed first: threads
moving between CPUs (all run pinned to one CPU, `--cpu`, unless `--no-pin`; unpinned the
epoch ratios spread over an IQR of 0.93-1.18 here, pinned 1.00-1.07), and glibc malloc handing
memory back and forth to the kernel (`pin_allocator`; `--default-malloc` leaves it; each round
prints its minor page faults). Two models: the demo spec (~134k parameters; target <= 1.02) and
the same spec with hidden layers [1000, 1000] (~1M parameters, a realistic size; target <= 1.01).

Last, the hand-off into the server: whole demo runs into the server's own sink, which hands the
event loop an epoch's records at a time, against the queue sink, in pairs. (It once handed over
every record as it came: each hand-off woke the loop, which took the GIL from training; logging
every step that cost 1.09x pinned and 1.17x unpinned here.)

CPU time on a shared machine drifts by a few percent from run to run, as much as the bound
itself. `--instructions` adds a count that does not: the demo spec's loop and bare loop each run
once under valgrind's callgrind, in their own process, which counts the instructions of one whole
run after a warm-up run (the window opens and closes on two marker calls, so imports and
warm-up are left out). It shows the metrics' own work; time also pays for what instructions do
not show (caches, branch predictors shared with the kernels), so it is a floor of the CPU-time
ratio, not a stand-in for it. Needs valgrind on PATH; takes several minutes.
Usage: python bench/trainer_overhead.py [--pairs 11] [--epochs 20] [--large-epochs 10] [--threads 1]
       [--cpu N | --no-pin] [--default-malloc] [--instructions] [--instruction-epochs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import math
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
from dataclasses import dataclass
from pathlib import Path

import anyio
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_server.core.runner import Handed, _ThreadSink
from trainer import EpochRecord, StepRecord, TrainerOptions, TrainingSpec
from trainer.datasets import load_data
from trainer.loop import run_training
from trainer.models import build_mlp
from trainer.records import MetricSink
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
    """Turns between threads: each runs until it passes the baton on, then waits for it back.
    Each turn's thread CPU seconds are kept, per contender, in `turns`."""

    def __init__(self, order: list[int]) -> None:
        self._cond = threading.Condition()
        self._live = list(order)
        self._turn = order[0]
        self._began: dict[int, float] = {}
        self.turns: dict[int, list[float]] = {k: [] for k in order}

    def wait(self, me: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == me)
        self._began[me] = time.thread_time()

    def pass_on(self, me: int, *, done: bool = False) -> None:
        self.turns[me].append(time.thread_time() - self._began[me])
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


LOOP, QUIET, BARE, CONTROL = range(4)
NAMES = ("loop", "no steps", "bare", "bare again")


@dataclass
class Round:
    """One lock-step round: each contender's turns (thread CPU seconds; the first is set-up and
    epoch 1, the last what follows the last epoch) and its minor page faults."""

    turns: list[list[float]]
    faults: list[int]

    def total(self, k: int) -> float:
        return sum(self.turns[k])

    def steady(self, k: int, base: int = BARE) -> list[float]:
        """Epoch-by-epoch ratios of contender k to `base`, epochs 2 to the last."""
        return [a / b for a, b in zip(self.turns[k][1:-1], self.turns[base][1:-1], strict=True)]


def lock_step(spec: TrainingSpec, quiet: TrainingSpec, order: list[int]) -> Round:
    """One round: the loop, the loop without step records, the bare loop and the bare loop again
    (the control), each on its own thread, one epoch each in turn (`order`)."""
    baton = Baton(order)
    faults: dict[int, int] = {}

    def work(me: int) -> None:
        baton.wait(me)
        before = _thread_faults()
        try:
            if me in (BARE, CONTROL):
                bare_loop(spec, after_epoch=lambda: baton.pass_on(me))
            else:
                run_training(spec if me == LOOP else quiet, HandOffSink(baton, me))
            faults[me] = _thread_faults() - before
        finally:  # a contender that raises must not leave the others waiting for its turn
            baton.pass_on(me, done=True)

    threads = [threading.Thread(target=work, args=(k,)) for k in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(faults) < len(order):
        raise RuntimeError(f"contender(s) {sorted(set(order) - faults.keys())} raised; see above")
    return Round([baton.turns[k] for k in range(len(order))], [faults[k] for k in range(4)])


def _thread_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def _quartiles(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.3f} (IQR {q1:.3f}-{q3:.3f})"


def compare(label: str, spec: TrainingSpec, pairs: int, threads: int, pinned: str) -> float:
    """The four contenders in lock-step rounds, the order reversed every other round; prints each
    round and the epoch-by-epoch ratios, and returns the median ratio loop/bare."""
    quiet = spec.model_copy(update={"log_every_n_steps": 0})  # epoch records only
    forward, backward = [LOOP, QUIET, BARE, CONTROL], [CONTROL, BARE, QUIET, LOOP]
    lock_step(spec, quiet, forward)  # warm-up: imports, allocator, kernels
    rows = [lock_step(spec, quiet, forward if i % 2 == 0 else backward) for i in range(pairs)]
    sink = QueueSink()
    run_training(spec, sink)
    model = build_mlp(spec.model, 8, 2, seed=0)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"\ntrainer overhead, {label}: hidden {list(spec.model.hidden_sizes)} "
        f"(~{params:,} parameters), {spec.epochs} epochs, a step record every step "
        f"({sink.records.qsize()} records a run into queue.SimpleQueue), {threads} torch "
        f"thread(s), {pinned}, torch {torch.__version__}; thread CPU seconds, epochs in lock-step"
    )
    header = ("run", *NAMES, "loop/bare", "again/bare", "minor faults")
    print("{:>4} {:>7} {:>8} {:>7} {:>10} {:>9} {:>10}  {}".format(*header))
    for run_no, row in enumerate(rows, start=1):
        loop_s, quiet_s, bare_s, again_s = (row.total(k) for k in range(4))
        print(
            f"{run_no:>4} {loop_s:>7.3f} {quiet_s:>8.3f} {bare_s:>7.3f} {again_s:>10.3f} "
            f"{loop_s / bare_s:>9.3f} {again_s / bare_s:>10.3f}  "
            + " / ".join(f"{f:,}" for f in row.faults)
        )
    total = sum(r.total(LOOP) for r in rows) / sum(r.total(BARE) for r in rows)
    whole = statistics.median(r.total(LOOP) / r.total(BARE) for r in rows)
    steady = {k: [x for r in rows for x in r.steady(k)] for k in (LOOP, QUIET, CONTROL)}
    print(f"whole runs: median loop/bare {whole:.3f}, total loop / total bare {total:.3f}")
    print(
        f"epoch by epoch (epochs 2-{spec.epochs}, {len(steady[LOOP])} pairs), median ratio to bare:"
    )
    for k in (LOOP, QUIET, CONTROL):
        print(f"  {NAMES[k]:>10}: {_quartiles(steady[k])}")
    for k in (LOOP, BARE):
        setup = [r.turns[k][0] - statistics.median(r.turns[k][1:-1]) for r in rows]
        after = [r.turns[k][-1] for r in rows]
        print(
            f"  {NAMES[k]:>10}: set-up {statistics.median(setup) * 1e3:.2f} ms, "
            f"after the last epoch {statistics.median(after) * 1e3:.2f} ms (medians)"
        )
    return statistics.median(steady[LOOP])


def handoff(rounds: int, epochs: int) -> None:
    """Whole demo runs into the server's own sink (`mcp_server.core.runner._ThreadSink`, with a
    consumer on an event loop in another thread, as in `serve`) against the queue sink the
    comparisons above use: wall seconds on the CPU the rest runs on, so the loop's own work is
    paid for too; the two run back to back (the order alternating) and each pair gives a ratio,
    which drift in the machine's speed between pairs leaves alone."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def one(spec: TrainingSpec, kind: str) -> float:
        send, receive = anyio.create_memory_object_stream[Handed](math.inf)

        async def consume() -> None:
            async with receive:
                async for _ in receive:
                    pass

        consumed = asyncio.run_coroutine_threadsafe(consume(), loop)
        sink: MetricSink = QueueSink() if kind == "queue" else _ThreadSink(loop, send)
        started = time.perf_counter()
        run_training(spec, sink)
        elapsed = time.perf_counter() - started
        loop.call_soon_threadsafe(send.close)
        consumed.result()
        return elapsed

    print(
        f"\nthe hand-off to the server's event loop, the demo spec, {epochs} epochs, wall seconds:"
    )
    print(
        "{:>13} {:>7} {:>7} {:>26}".format(
            "step records", "queue", "server", "server/queue (pairs)"
        )
    )
    for every in (1, 10):
        spec = TrainingSpec(epochs=epochs, log_every_n_steps=every, device="cpu")
        for kind in ("queue", "server"):  # warm-up
            one(spec, kind)
        pairs = []
        for i in range(rounds):
            order = ("queue", "server") if i % 2 == 0 else ("server", "queue")
            pairs.append(dict(zip(order, (one(spec, order[0]), one(spec, order[1])), strict=True)))
        queue_s = statistics.median(p["queue"] for p in pairs)
        server_s = statistics.median(p["server"] for p in pairs)
        ratios = [p["server"] / p["queue"] for p in pairs]
        label = "every step" if every == 1 else f"every {every}th"
        print(f"{label:>13} {queue_s:>7.3f} {server_s:>7.3f} {_quartiles(ratios):>26}")
    loop.call_soon_threadsafe(loop.stop)


def pin_cpu(cpu: int) -> None:
    """Run every thread of this process on one CPU: the contenders take turns, so one is all they
    need, and none is moved between CPUs' caches mid-epoch (unpinned, epoch-by-epoch ratios here
    spread over an IQR of 0.93-1.18; pinned, 1.00-1.07)."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})


def pin_allocator() -> bool:
    """Fix glibc malloc so freed tensors stay in one heap: by default its mmap threshold moves as
    it goes and each thread gets an arena of its own, so the same ~1M-model run paid 31k to 285k
    page faults here by what ran before it and on which arena, a spread of 10-25% in its time that
    hides a 1% overhead. One arena (the contenders take turns, so none waits on its lock), an mmap
    threshold at glibc's most (32 MiB) and no trimming: after the warm-up round the bare loops
    fault next to never."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    return all(
        libc.mallopt(option, value)
        for option, value in (
            (m_mmap_threshold, 32 << 20),
            (m_trim_threshold, 1 << 30),
            (m_arena_max, 1),
        )
    )


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
    parser.add_argument("--large-epochs", type=int, default=10, help="epochs of the ~1M model")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (valgrind)"
    )
    parser.add_argument("--instruction-epochs", type=int, default=10)
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc malloc's thresholds moving"
    )
    parser.add_argument(
        "--cpu", type=int, default=max(os.sched_getaffinity(0)), help="the CPU to pin to"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave threads free to move")
    parser.add_argument("--count-child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # one torch thread: the contenders take turns, so one CPU is all they need
    free = args.no_pin or args.count_child or args.threads > 1
    pinned = "unpinned" if free else f"pinned to CPU {args.cpu}"
    if pinned != "unpinned":
        pin_cpu(args.cpu)
    if not args.default_malloc and not args.count_child:
        print(f"glibc malloc thresholds pinned: {pin_allocator()}")
    if args.count_child:
        counted_run(args.count_child, args.instruction_epochs)
        return

    demo_spec = TrainingSpec(epochs=args.epochs, log_every_n_steps=1, device="cpu")
    large = demo_spec.model_copy(
        update={"epochs": args.large_epochs, "model": ModelSpec(hidden_sizes=(1000, 1000))}
    )
    tiny_ratio = compare("the demo spec", demo_spec, args.pairs, args.threads, pinned)
    large_ratio = compare("a model of realistic size", large, args.pairs, args.threads, pinned)
    print(
        f"\nepoch-by-epoch median loop/bare: demo {tiny_ratio:.3f} (target <= 1.02: "
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
    handoff(args.pairs, args.epochs)
    if args.instructions:
        count_instructions(args.instruction_epochs, args.threads)


if __name__ == "__main__":
    main()
