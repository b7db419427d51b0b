"""TrainingSpec: the demo defaults, immutability, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainer import (
    SYNTHETIC_DATASETS,
    CsvDataset,
    EarlyStoppingSpec,
    FactoryDataset,
    ModelSpec,
    SyntheticDataset,
    TrainingSpec,
)


def _error(data: Mapping[str, object]) -> tuple[tuple[int | str, ...], str]:
    with pytest.raises(ValidationError) as caught:
        TrainingSpec.model_validate(data)
    first = caught.value.errors()[0]
    return first["loc"], first["msg"]


def test_the_default_spec_is_the_noisy_spirals_demo_with_a_large_mlp() -> None:
    spec = TrainingSpec()
    assert spec.dataset == SyntheticDataset(name="noisy_spirals")
    assert spec.model.hidden_sizes == (256, 256, 256)
    assert spec.early_stopping is None
    assert spec.epochs == 20


def test_every_synthetic_name_has_a_description() -> None:
    for name in SYNTHETIC_DATASETS:
        SyntheticDataset.model_validate({"name": name})
    assert set(SYNTHETIC_DATASETS) == {"blobs", "noisy_spirals", "sine"}


def test_a_spec_is_frozen_and_survives_a_json_round_trip() -> None:
    spec = TrainingSpec(
        dataset=CsvDataset(path="d.csv", target="y", features=("a", "b")),
        early_stopping=EarlyStoppingSpec(gl_alpha=2.0),
    )
    with pytest.raises(ValidationError):
        spec.epochs = 3
    assert TrainingSpec.model_validate_json(spec.model_dump_json()) == spec


def test_the_dataset_is_chosen_by_its_kind() -> None:
    spec = TrainingSpec.model_validate({"dataset": {"kind": "factory", "factory": "pkg.mod:make"}})
    assert spec.dataset == FactoryDataset(factory="pkg.mod:make")


def test_an_empty_early_stopping_object_turns_it_on_with_defaults() -> None:
    spec = TrainingSpec.model_validate({"early_stopping": {}, "schedule": {"kind": "cosine"}})
    assert spec.early_stopping == EarlyStoppingSpec()
    assert spec.schedule.kind == "cosine"


@pytest.mark.parametrize(
    ("data", "loc", "words"),
    [
        ({"epochs": 0}, ("epochs",), "greater than or equal to 1"),
        ({"epochs": 100_001}, ("epochs",), "less than or equal to 100000"),
        ({"optimizer": "rmsprop"}, ("optimizer",), "'sgd', 'adam' or 'adamw'"),
        ({"learning_rate": float("nan")}, ("learning_rate",), "finite number"),
        ({"grad_clip": 0}, ("grad_clip",), "greater than 0"),
        ({"val_fraction": 0.95}, ("val_fraction",), "less than or equal to 0.9"),
        ({"device": "tpu"}, ("device",), "'auto', 'cpu', 'cuda' or 'mps'"),
        ({"log_every_n_steps": -1}, ("log_every_n_steps",), "greater than or equal to 0"),
        ({"model": {"hidden_sizes": [0]}}, ("model", "hidden_sizes", 0), "greater than or equal"),
        ({"model": {"activation": "elu"}}, ("model", "activation"), "'relu', 'gelu', 'tanh'"),
        ({"model": {"dropout": 1}}, ("model", "dropout"), "less than 1"),
        ({"schedule": {"kind": "linear"}}, ("schedule", "kind"), "'constant', 'step'"),
        (
            {"dataset": {"kind": "synthetic", "name": "mnist"}},
            ("dataset", "synthetic", "name"),
            "'blobs', 'noisy_spirals' or 'sine'",
        ),
        (
            {"dataset": {"kind": "factory", "factory": "os.system"}},
            ("dataset", "factory", "factory"),
            "'package.module:function'",
        ),
        (
            {"early_stopping": {"pq_strip_k": 1}},
            ("early_stopping", "pq_strip_k"),
            "greater than or equal to 2",
        ),
        ({"unknown": 1}, ("unknown",), "Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_what_is_allowed(
    data: dict[str, object], loc: tuple[int | str, ...], words: str
) -> None:
    got_loc, message = _error(data)
    assert got_loc == loc
    assert words in message


def test_a_validation_monitor_needs_a_validation_split() -> None:
    _, message = _error({"val_fraction": 0, "early_stopping": {"monitor": "val_loss"}})
    assert "early_stopping.monitor" in message and "val_fraction" in message


def test_accuracy_cannot_be_monitored_on_a_regression_set() -> None:
    sine = {"kind": "synthetic", "name": "sine"}
    _, message = _error({"dataset": sine, "early_stopping": {"monitor": "val_accuracy"}})
    assert "early_stopping.monitor" in message and "regression" in message


def test_csv_features_must_be_distinct_and_exclude_the_target() -> None:
    with pytest.raises(ValidationError, match="must not contain the target"):
        CsvDataset(path="d.csv", target="y", features=("a", "y"))
    with pytest.raises(ValidationError, match="must be distinct"):
        CsvDataset(path="d.csv", target="y", features=("a", "a"))


def test_the_spec_has_a_json_schema_with_the_dataset_kinds() -> None:
    schema = TrainingSpec.model_json_schema()
    assert set(schema["properties"]["dataset"]["discriminator"]["mapping"]) == {
        "synthetic",
        "csv",
        "factory",
    }


def test_a_linear_model_has_no_hidden_layers() -> None:
    assert ModelSpec(hidden_sizes=()).hidden_sizes == ()


def test_the_public_surface_imports_without_torch() -> None:
    code = (
        "import sys, trainer, trainer.spec, trainer.preflight, trainer.stopping, "
        "trainer.records, trainer.errors; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
