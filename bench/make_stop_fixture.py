"""Make the learning-curve fixture behind `bench/stop_decisions.py` by real trainings.

Run: .venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/make_stop_fixture.py
(re-runnable; about 15-20 minutes on one free CPU core; `--jobs N` runs N trainings at once)

Each run is this project's own trainer (`trainer.loop.run_training`, a CSV dataset under a
temporary data root) on one of five real tabular datasets bundled with scikit-learn (nothing is
downloaded): breast cancer, digits, wine, iris (classification) and diabetes (regression, target
standardised). The MLP's size, activation, dropout, optimizer, learning rate, weight decay and
batch size are drawn from a seeded generator; every run trains 80 epochs without early stopping.
Two batches, each with its own seed and the same number of runs of every dataset: the tuning
batch (25 per dataset) and the held-out batch (20 per dataset), drawn and trained only after the
decision rule had been tuned on the first, so no rule was ever tuned on it. Writes
`tests/trainer/fixtures/stop_curves.json`: per run its config, split and per-epoch
train_loss/val_loss (6 significant digits). `--split` trains one batch only (to a separate
`--out`; the fixture is the tuning batch's runs followed by the held-out batch's).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import random
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from trainer import CsvDataset, ModelSpec, TrainingSpec
from trainer.preflight import TrainerOptions
from trainer.records import EpochRecord, StepRecord

EPOCHS = 80
# (seed, runs per dataset, split, id tag). Each held-out batch was drawn and trained after the
# decision rule had been tuned: seed 2027 was the held-out part of the first rule, then looked at
# while the learned stop prior was made, so it is tuning now; seed 2028 was trained after that
# rule was frozen and nothing was ever tuned on it.
BATCHES = (
    (2026, 25, "tuning", ""),
    (2027, 20, "tuning", "h"),
    (2028, 20, "held_out", "n"),
)
OUT = Path(__file__).resolve().parent.parent / "tests" / "trainer" / "fixtures" / "stop_curves.json"
DATASETS = ("breast_cancer", "digits", "wine", "iris", "diabetes")


def _write_csv(name: str, root: Path) -> Path:
    """One bundled scikit-learn dataset as a CSV with a `target` column."""
    # Imported by name: scikit-learn is the optional `bench` extra and ships no type stubs.
    datasets = importlib.import_module("sklearn.datasets")
    loaded = getattr(datasets, f"load_{name}")()
    target = [float(t) for t in loaded.target]
    if name == "diabetes":  # the trainer uses regression targets unscaled
        mean = sum(target) / len(target)
        std = (sum((t - mean) ** 2 for t in target) / len(target)) ** 0.5
        target = [(t - mean) / std for t in target]
    path = root / f"{name}.csv"
    columns = [f"x{i}" for i in range(loaded.data.shape[1])]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "target"])
        for row, y in zip(loaded.data.tolist(), target, strict=True):
            writer.writerow([*row, int(y) if name != "diabetes" else y])
    return path


def _configs() -> list[dict[str, Any]]:
    configs = []
    for seed, per_dataset, split, tag in BATCHES:
        rng = random.Random(seed)
        for dataset in DATASETS:
            # A draw the first batch was made with (it once split that batch): kept so its
            # configurations, and so its curves, stay the same.
            rng.sample(range(per_dataset), 10)
            for i in range(per_dataset):
                optimizer = rng.choice(["sgd", "adam", "adamw"])
                low, high = (-3.0, -0.5) if optimizer == "sgd" else (-4.0, -1.7)
                configs.append(
                    {
                        "id": f"{dataset}-{tag}{i}",
                        "dataset": dataset,
                        "split": split,
                        "hidden_sizes": rng.choice(
                            [[16], [64], [256], [64, 64], [128, 64], [256, 256], [512, 256, 128]]
                        ),
                        "activation": rng.choice(["relu", "tanh", "gelu"]),
                        "dropout": rng.choice([0.0, 0.0, 0.1, 0.3, 0.5]),
                        "optimizer": optimizer,
                        "learning_rate": float(f"{10 ** rng.uniform(low, high):.3g}"),
                        "weight_decay": rng.choice([0.0, 0.0, 1e-4, 1e-3, 1e-2]),
                        "batch_size": rng.choice([8, 16, 32, 64, 128]),
                        "seed": rng.randrange(1_000_000),
                    }
                )
    return configs


class _Sink:
    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_epoch(self, record: EpochRecord) -> None:
        assert record.val_loss is not None
        self.train.append(float(f"{record.train_loss:.6g}"))
        self.val.append(float(f"{record.val_loss:.6g}"))

    def on_step(self, record: StepRecord) -> None:
        pass


def _train(config: dict[str, Any], root: str) -> dict[str, Any]:
    from trainer.loop import run_training

    spec = TrainingSpec(
        dataset=CsvDataset(
            path=str(Path(root) / f"{config['dataset']}.csv"),
            target="target",
            task="regression" if config["dataset"] == "diabetes" else "classification",
        ),
        model=ModelSpec(
            hidden_sizes=tuple(config["hidden_sizes"]),
            activation=config["activation"],
            dropout=config["dropout"],
        ),
        epochs=EPOCHS,
        batch_size=config["batch_size"],
        optimizer=config["optimizer"],
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        val_fraction=0.3,
        seed=config["seed"],
        device="cpu",
        log_every_n_steps=0,
        torch_threads=1,
    )
    sink = _Sink()
    result = run_training(spec, sink, options=TrainerOptions(data_roots=(Path(root),)))
    print(f"{config['id']}: {result.outcome}, best epoch {result.best_epoch}", file=sys.stderr)
    return {**config, "outcome": result.outcome, "train_loss": sink.train, "val_loss": sink.val}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--split", choices=("tuning", "held_out"), help="only this part's runs")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="a fixture whose runs of the same configuration are taken instead of trained again "
        "(their split is set from BATCHES); repeatable",
    )
    args = parser.parse_args()
    configs = [c for c in _configs() if args.split is None or c["split"] == args.split]
    known: dict[str, dict[str, Any]] = {}
    known_failed: set[str] = set()
    for path in args.reuse:
        old = json.loads(path.read_text())
        known.update((run["id"], run) for run in old["runs"])
        known_failed.update(old["failed"])
    keys = ("train_loss", "val_loss", "split")

    def same(config: dict[str, Any], run: dict[str, Any]) -> bool:
        return all(run.get(k) == v for k, v in config.items() if k not in keys)

    reused = {
        c["id"]: {**known[c["id"]], "split": c["split"], "outcome": "completed"}
        for c in configs
        if c["id"] in known and same(c, known[c["id"]])
    }
    reused.update({c["id"]: {**c, "outcome": "failed"} for c in configs if c["id"] in known_failed})
    todo = [c for c in configs if c["id"] not in reused]
    with tempfile.TemporaryDirectory() as root:
        for name in DATASETS:
            _write_csv(name, Path(root))
        with ProcessPoolExecutor(args.jobs) as pool:
            trained = {run["id"]: run for run in pool.map(_train, todo, [root] * len(todo))}
    runs = [reused.get(c["id"]) or trained[c["id"]] for c in configs]
    # A run that failed (a non-finite loss) has no 80-epoch curve to stop on: it is listed, and
    # the analysis' divergence flag, not the stop rule, is what handles it.
    failed = [run["id"] for run in runs if run.pop("outcome") != "completed"]
    runs = [run for run in runs if run["id"] not in failed]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fixture = {
        "about": "Real learning curves for bench/stop_decisions.py, made by "
        "bench/make_stop_fixture.py (the project's trainer, scikit-learn's bundled datasets, "
        f"{EPOCHS} epochs, no early stopping).",
        "epochs": EPOCHS,
        "failed": failed,
        "runs": runs,
    }
    text = json.dumps(fixture, separators=(",", ":"))
    args.out.write_text(text.replace('},{"id"', '},\n{"id"') + "\n")
    print(f"wrote {len(runs)} runs to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
