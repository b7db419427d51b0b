"""Train one spec and print a one-line throughput summary (used by scripts/gpu_check.sh).

Usage: python scripts/run_spec.py [--device cpu|cuda|mps|auto] [--spec SPEC.json] [--epochs N]
Without --spec it runs the default demo spec. Exits 1 if the run does not complete.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import EpochRecord, StepRecord, TrainingSpec
from trainer.loop import run_training


class _Epochs:
    def __init__(self) -> None:
        self.records: list[EpochRecord] = []

    def on_epoch(self, record: EpochRecord) -> None:
        self.records.append(record)

    def on_step(self, record: StepRecord) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description="Train one spec and print its throughput.")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--spec", type=Path, help="a TrainingSpec as JSON (default: the demo)")
    parser.add_argument("--epochs", type=int, help="override the spec's epochs")
    args = parser.parse_args()

    spec = TrainingSpec.model_validate_json(args.spec.read_text()) if args.spec else TrainingSpec()
    update: dict[str, object] = {"device": args.device}
    if args.epochs is not None:
        update["epochs"] = args.epochs
    spec = TrainingSpec.model_validate({**spec.model_dump(), **update})

    sink = _Epochs()
    started = time.perf_counter()
    result = run_training(spec, sink)
    wall = time.perf_counter() - started
    steady = sink.records[1:] or sink.records  # the first epoch pays for warm-up (CUDA context)
    rate = statistics.median(r.samples_per_s for r in steady) if steady else 0.0
    print(
        f"device={result.device:<6} outcome={result.outcome} epochs={result.epochs_completed} "
        f"train samples/s (median epoch after the first)={rate:,.0f} "
        f"first epoch={sink.records[0].epoch_duration_s if sink.records else 0:.3f}s "
        f"whole run={wall:.2f}s"
    )
    return 0 if result.outcome == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
