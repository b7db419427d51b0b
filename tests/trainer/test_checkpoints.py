"""Checkpoints: best and last are complete and loadable; restore_best_weights restores the best."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from tests.trainer.conftest import ListSink
from trainer import EarlyStoppingSpec, TrainerOptions, TrainingSpec
from trainer.checkpoints import load_checkpoint
from trainer.loop import train
from trainer.models import build_mlp


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_and_last_checkpoints_are_complete_and_load_into_a_fresh_model(
    tmp_path: Path,
) -> None:
    spec = TrainingSpec(epochs=12)
    sink = ListSink()
    trained = train(spec, sink, options=TrainerOptions(artifact_dir=tmp_path / "run"))
    result = trained.result
    assert result.checkpoint_dir == str(tmp_path / "run")
    best_file = f"epoch-{result.best_epoch:06d}.pt"
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == sorted(["best.pt", "last.pt", "checkpoints.json", "epoch-000012.pt", best_file])

    last = load_checkpoint(tmp_path / "run" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert last["epoch"] == 12 and best["epoch"] == result.best_epoch
    assert best["epoch"] < 12
    assert TrainingSpec.model_validate_json(last["spec"]) == spec
    assert (
        best["metrics"]["val_loss"] == result.best_value == sink.epochs[best["epoch"] - 1].val_loss
    )
    assert last["optimizer"]["state"]  # Adam moments are there to resume from
    model = build_mlp(spec.model, 8, 2, seed=99)
    model.load_state_dict(last["model"])
    assert _same_weights(model.state_dict(), trained.model.state_dict())


def test_restore_best_weights_leaves_the_model_with_the_best_epochs_weights(
    tmp_path: Path,
) -> None:
    stopping = EarlyStoppingSpec(patience=None, restore_best_weights=True)
    spec = TrainingSpec(epochs=12, early_stopping=stopping)
    trained = train(spec, ListSink(), options=TrainerOptions(artifact_dir=tmp_path))
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] < last["epoch"] == 12
    assert _same_weights(trained.model.state_dict(), best["model"])
    assert not _same_weights(trained.model.state_dict(), last["model"])


def test_without_restore_the_model_keeps_its_last_weights_and_no_dir_means_no_files(
    tmp_path: Path,
) -> None:
    spec = TrainingSpec(epochs=3)
    trained = train(spec, ListSink())
    assert trained.result.checkpoint_dir is None
    trained_again = train(spec, ListSink(), options=TrainerOptions(artifact_dir=tmp_path))
    assert _same_weights(
        trained_again.model.state_dict(), load_checkpoint(tmp_path / "last.pt")["model"]
    )


def test_a_run_cancelled_before_its_first_epoch_reports_no_checkpoints(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    options = TrainerOptions(artifact_dir=tmp_path / "run")
    trained = train(TrainingSpec(), ListSink(), cancel=cancel, options=options)
    assert trained.result.checkpoint_dir is None
    assert not (tmp_path / "run").exists()
