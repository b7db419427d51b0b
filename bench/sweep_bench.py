"""Sweeps on a fixed compute budget: Optuna's TPE with Hyperband pruning against random search
without pruning, on the same space, the same data and the same total epochs.

Each strategy trains trials one after another until the budget (total epochs) is spent; the last
trial stops where the budget ends. A trial's value is its best val_loss. Printed per seed and as
a mean: the best value found, the epochs actually spent and the trials run. The baseline is random
search without pruning, measured in the same run.
Usage: python bench/sweep_bench.py [--budget 200] [--epochs 20] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import EpochRecord, ModelSpec, StepRecord, SyntheticDataset, TrainingSpec
from trainer.loop import run_training

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Outcome:
    best: float
    epochs: int
    trials: int


class _Reporter:
    """The sink: reports each epoch's val_loss to the trial, stops on pruning or budget."""

    def __init__(self, trial: optuna.Trial, left: int, prune: bool) -> None:
        self.trial, self.left, self.prune = trial, left, prune
        self.cancel = threading.Event()
        self.values: list[float] = []
        self.pruned = False

    def on_epoch(self, record: EpochRecord) -> None:
        assert record.val_loss is not None
        self.values.append(record.val_loss)
        self.trial.report(record.val_loss, record.epoch)
        if len(self.values) >= self.left:
            self.cancel.set()
        elif self.prune and self.trial.should_prune():
            self.pruned = True
            self.cancel.set()

    def on_step(self, record: StepRecord) -> None:
        pass


def _spec(trial: optuna.Trial, epochs: int, seed: int) -> TrainingSpec:
    return TrainingSpec(
        dataset=SyntheticDataset(name="noisy_spirals", n_samples=1000),
        model=ModelSpec(
            hidden_sizes=(trial.suggest_categorical("width", [16, 64, 256]),) * 2,
            dropout=trial.suggest_float("dropout", 0.0, 0.5),
        ),
        epochs=epochs,
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 0.3, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128]),
        seed=seed,
        log_every_n_steps=0,
        torch_threads=1,
    )


def sweep(pruned: bool, budget: int, epochs: int, seed: int) -> Outcome:
    if pruned:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=5
        )
        pruner: optuna.pruners.BasePruner = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=3
        )
    else:
        sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    spent = trials = 0
    best = float("inf")
    while spent < budget:
        trial = study.ask()
        reporter = _Reporter(trial, budget - spent, pruned)
        run_training(_spec(trial, epochs, seed), reporter, cancel=reporter.cancel)
        trials += 1
        spent += len(reporter.values)
        value = min(reporter.values)
        best = min(best, value)
        if reporter.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return Outcome(best, spent, trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=200, help="total epochs per strategy")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of a full trial")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[tuple[int, Outcome, Outcome]] = []
    for seed in range(args.seeds):
        rows.append(
            (
                seed,
                sweep(True, args.budget, args.epochs, seed),
                sweep(False, args.budget, args.epochs, seed),
            )
        )
    print(
        f"sweep bench: noisy_spirals, {args.budget} epochs per strategy, full trials of "
        f"{args.epochs} epochs, 5 parameters (width, dropout, learning_rate, weight_decay, "
        "batch_size)"
    )
    print()
    print(
        "| seed | TPE + Hyperband best val_loss | epochs | trials "
        "| random, no pruning best val_loss | epochs | trials | ratio (TPE/random) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed, tpe, rnd in rows:
        print(
            f"| {seed} | {tpe.best:.4f} | {tpe.epochs} | {tpe.trials} | {rnd.best:.4f} | "
            f"{rnd.epochs} | {rnd.trials} | {tpe.best / rnd.best:.3f} |"
        )

    def mean(values: Any) -> float:
        return statistics.fmean(values)

    tpe_best, rnd_best = mean(r[1].best for r in rows), mean(r[2].best for r in rows)
    print(
        f"| mean | {tpe_best:.4f} | {mean(r[1].epochs for r in rows):.0f} | "
        f"{mean(r[1].trials for r in rows):.1f} | {rnd_best:.4f} | "
        f"{mean(r[2].epochs for r in rows):.0f} | {mean(r[2].trials for r in rows):.1f} | "
        f"{tpe_best / rnd_best:.3f} |"
    )
    wins = sum(1 for _, t, r in rows if t.best < r.best)
    print(f"\nTPE + Hyperband found the lower val_loss on {wins} of {len(rows)} seeds.")


if __name__ == "__main__":
    main()
