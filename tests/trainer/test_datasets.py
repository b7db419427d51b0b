"""Datasets end to end: CSV files written in tmp_path, factories, and the errors they raise."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import ListSink
from trainer import (
    CsvDataset,
    DatasetError,
    FactoryDataset,
    ModelSpec,
    SpecError,
    SyntheticDataset,
    TrainerOptions,
    TrainingSpec,
)
from trainer.datasets import load_data
from trainer.loop import run_training

SMALL = ModelSpec(hidden_sizes=(16,))


def _write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _animals(path: Path, n: int = 80) -> Path:
    """Two numeric features and a string label decided by their sum."""
    g = torch.Generator().manual_seed(0)
    points = torch.randn(n, 2, generator=g).tolist()
    rows: list[list[object]] = [["weight", "height", "animal"]]
    rows += [[w, h, "cat" if w + h < 0 else "dog"] for w, h in points]
    return _write_csv(path, rows)


def _csv_run(path: Path, **dataset: object) -> tuple[ListSink, str]:
    spec = TrainingSpec(
        dataset=CsvDataset.model_validate({"path": str(path), **dataset}),
        model=SMALL,
        epochs=4,
        learning_rate=0.02,
    )
    sink = ListSink()
    result = run_training(spec, sink, options=TrainerOptions(data_roots=(path.parent,)))
    return sink, result.outcome


def test_a_csv_with_string_labels_trains_as_classification(tmp_path: Path) -> None:
    sink, outcome = _csv_run(_animals(tmp_path / "animals.csv"), target="animal")
    assert outcome == "completed"
    assert sink.epochs[-1].train_loss < sink.epochs[0].train_loss
    assert sink.epochs[-1].val_accuracy is not None and sink.epochs[-1].val_accuracy > 0.7


def test_a_csv_with_a_continuous_target_trains_as_regression(tmp_path: Path) -> None:
    rows: list[list[object]] = [["x", "noise", "y"]]
    rows += [[i / 10, (i * 7) % 3, 2 * i / 10 + 1] for i in range(50)]
    sink, outcome = _csv_run(_write_csv(tmp_path / "line.csv", rows), target="y")
    assert outcome == "completed"
    assert sink.epochs[-1].val_accuracy is None
    assert sink.epochs[-1].train_loss < sink.epochs[0].train_loss


def test_the_task_is_inferred_from_the_target(tmp_path: Path) -> None:
    rows: list[list[object]] = [["a", "b", "small_int", "real"]]
    rows += [[i, i % 5, i % 3, i / 7] for i in range(30)]
    path = _write_csv(tmp_path / "d.csv", rows)
    options = TrainerOptions(data_roots=(tmp_path,))

    def task(target: str, given: str = "auto") -> tuple[str, int]:
        dataset = CsvDataset.model_validate(
            {"path": str(path), "target": target, "features": ["a", "b"], "task": given}
        )
        data = load_data(TrainingSpec(dataset=dataset), options)
        return data.task, data.n_outputs

    assert task("small_int") == ("classification", 3)
    assert task("real") == ("regression", 1)
    assert task("small_int", "regression") == ("regression", 1)


def test_csv_features_are_standardised_on_the_training_split_only(tmp_path: Path) -> None:
    rows: list[list[object]] = [["a", "y"]]
    rows += [[i * 10.0, i % 2] for i in range(40)]
    path = _write_csv(tmp_path / "d.csv", rows)
    spec = TrainingSpec(dataset=CsvDataset(path=str(path), target="y"), val_fraction=0.25)
    data = load_data(spec, TrainerOptions(data_roots=(tmp_path,)))
    assert data.val is not None
    train_x, val_x = data.train[:][0], data.val[:][0]
    assert train_x.mean().abs() < 1e-5 and math.isclose(float(train_x.std(correction=0)), 1.0)
    assert val_x.mean().abs() > 1e-3  # the validation rows did not shape the scaling


def test_a_non_numeric_feature_fails_before_the_first_epoch(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [["a", "y"], [1, 0], ["abc", 1], [2, 0]])
    sink = ListSink()
    with pytest.raises(DatasetError, match="column 'a' line 3: the value is not a finite number"):
        run_training(
            TrainingSpec(dataset=CsvDataset(path=str(path), target="y")),
            sink,
            options=TrainerOptions(data_roots=(tmp_path,)),
        )
    assert sink.epochs == [] and sink.steps == []


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([["a", "y"], [1, 0], [2]], "dataset.path", "line 3 has 1 fields"),
        ([["a", "y"], [1, 0], [2, "nan"]], "dataset.target", "finite numeric"),
    ],
)
def test_malformed_csv_rows_are_dataset_errors(
    tmp_path: Path, rows: list[list[object]], field: str, words: str
) -> None:
    path = _write_csv(tmp_path / "d.csv", rows)
    dataset = CsvDataset(path=str(path), target="y", task="regression")
    with pytest.raises(DatasetError, match=words) as caught:
        run_training(
            TrainingSpec(dataset=dataset),
            ListSink(),
            options=TrainerOptions(data_roots=(tmp_path,)),
        )
    assert caught.value.field == field


def test_the_loop_refuses_a_csv_outside_the_data_roots_itself(tmp_path: Path) -> None:
    path = _animals(tmp_path / "animals.csv")
    spec = TrainingSpec(dataset=CsvDataset(path=str(path), target="animal"))
    with pytest.raises(SpecError, match="outside the allowed data roots"):
        run_training(spec, ListSink(), options=TrainerOptions(data_roots=(tmp_path / "other",)))


def test_a_factory_is_refused_without_the_allow_option() -> None:
    spec = TrainingSpec(
        dataset=FactoryDataset(factory="tests.trainer.tiny_factory:sign_classifier")
    )
    with pytest.raises(SpecError, match="--allow-factory"):
        run_training(spec, ListSink())


@pytest.mark.parametrize("function", ["sign_classifier", "sign_classifier_with_val"])
def test_an_allowed_factory_trains_its_own_model_on_its_own_data(function: str) -> None:
    spec = TrainingSpec(
        dataset=FactoryDataset(factory=f"tests.trainer.tiny_factory:{function}"),
        epochs=5,
        learning_rate=0.02,
        batch_size=16,
    )
    sink = ListSink()
    result = run_training(spec, sink, options=TrainerOptions(allow_factory=True))
    assert result.outcome == "completed"
    assert sink.epochs[-1].train_loss < sink.epochs[0].train_loss
    assert sink.epochs[-1].train_accuracy is not None
    has_val = function.endswith("with_val")
    assert (sink.epochs[-1].val_loss is not None) == has_val


@pytest.mark.parametrize(
    ("function", "words"),
    [("broken", "the user's code is broken"), ("wrong_shape", "must return (model")],
)
def test_a_failing_factory_is_a_dataset_error(function: str, words: str) -> None:
    spec = TrainingSpec(dataset=FactoryDataset(factory=f"tests.trainer.tiny_factory:{function}"))
    with pytest.raises(DatasetError, match=words.replace("(", r"\(")) as caught:
        run_training(spec, ListSink(), options=TrainerOptions(allow_factory=True))
    assert caught.value.field == "dataset.factory"


def test_synthetic_sets_are_the_same_for_the_same_seed() -> None:
    options = TrainerOptions()
    for name in ("blobs", "noisy_spirals", "sine"):
        spec = TrainingSpec(dataset=SyntheticDataset(name=name, n_samples=50))
        a, b = load_data(spec, options), load_data(spec, options)
        assert torch.equal(a.train[:][0], b.train[:][0])
        other = load_data(spec.model_copy(update={"seed": 1}), options)
        assert not torch.equal(a.train[:][0], other.train[:][0])
