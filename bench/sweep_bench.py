"""Sweeps on a fixed compute budget: Optuna's TPE with Hyperband pruning against random search
without pruning, on the same space, the same data and the same total epochs.

Each strategy trains trials one after another until the budget (total epochs) is spent; the last
trial stops where the budget ends. A trial's value is its best val_loss. Printed per seed and as
a mean: the best value found, the epochs actually spent and the trials run. The baseline is random
search without pruning, measured in the same run. Two more arms split the effect in two: random
search with Hyperband (pruning alone) and TPE without pruning (the sampler alone). Every arm of a
seed trains the same data with the same sampler seed, and its study has a fixed name (Hyperband
puts trials in brackets by a hash of the study's name: a random name made runs unrepeatable).
The defaults are the README's figures (about 7 minutes on 2 shared CPUs).
Usage: python bench/sweep_bench.py [--budget 300] [--epochs 15] [--seeds 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

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


ARMS = (("tpe", True), ("random", False), ("random", True), ("tpe", False))


def sweep(sampling: str, pruned: bool, budget: int, epochs: int, seed: int) -> Outcome:
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
        if sampling == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
        if pruned
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=f"bench-{seed}", direction="minimize", sampler=sampler, pruner=pruner
    )
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


def _label(sampling: str, pruned: bool) -> str:
    return ("TPE" if sampling == "tpe" else "random") + (" + Hyperband" if pruned else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=300, help="total epochs per strategy")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of a full trial")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        [sweep(s, p, args.budget, args.epochs, seed) for s, p in ARMS] for seed in range(args.seeds)
    ]
    print(
        f"sweep bench: noisy_spirals, {args.budget} epochs per strategy, full trials of "
        f"{args.epochs} epochs, 5 parameters (width, dropout, learning_rate, weight_decay, "
        f"batch_size), {args.seeds} seeds"
    )
    print()
    print("| seed | " + " | ".join(f"{_label(*arm)} best val_loss / trials" for arm in ARMS) + " |")
    print("|---" * (len(ARMS) + 1) + "|")
    for seed, outcomes in enumerate(rows):
        cells = [f"{o.best:.4f} / {o.trials}" for o in outcomes]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    print(
        "| strategy | mean best val_loss | stdev | mean epochs | mean trials "
        "| ratio to random (no pruning) | seeds better than random |"
    )
    print("|---|---|---|---|---|---|---|")
    baseline = [r[1].best for r in rows]
    for i, arm in enumerate(ARMS):
        best = [r[i].best for r in rows]
        spread = statistics.stdev(best) if len(best) > 1 else 0.0
        wins = sum(1 for b, base in zip(best, baseline, strict=True) if b < base)
        print(
            f"| {_label(*arm)} | {statistics.fmean(best):.4f} | {spread:.4f} | "
            f"{statistics.fmean(r[i].epochs for r in rows):.0f} | "
            f"{statistics.fmean(r[i].trials for r in rows):.1f} | "
            f"{statistics.fmean(best) / statistics.fmean(baseline):.3f} | "
            f"{'-' if i == 1 else f'{wins} of {len(rows)}'} |"
        )


if __name__ == "__main__":
    main()
