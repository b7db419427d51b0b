"""check_spec: the cheap, torch-free refusals the server makes before creating an operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import (
    CsvDataset,
    DatasetError,
    FactoryDataset,
    SpecError,
    TrainerOptions,
    TrainingSpec,
    check_spec,
)


def _csv_spec(
    path: Path | str, target: str = "y", features: tuple[str, ...] | None = None
) -> TrainingSpec:
    return TrainingSpec(dataset=CsvDataset(path=str(path), target=target, features=features))


def test_a_csv_under_a_data_root_passes(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n")
    check_spec(_csv_spec(tmp_path / "d.csv"), TrainerOptions(data_roots=(tmp_path,)))


def test_a_relative_csv_path_is_looked_up_in_the_data_roots(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("a,y\n1,0\n")
    check_spec(_csv_spec("sub/d.csv"), TrainerOptions(data_roots=(tmp_path / "x", tmp_path)))


def test_a_missing_csv_is_a_dataset_error_on_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file") as caught:
        check_spec(_csv_spec(tmp_path / "nope.csv"), TrainerOptions(data_roots=(tmp_path,)))
    assert caught.value.field == "dataset.path"


def test_a_csv_outside_the_data_roots_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret.csv"
    root.mkdir()
    outside.write_text("a,y\n1,0\n")
    options = TrainerOptions(data_roots=(root,))
    for path in (outside, "../secret.csv"):
        with pytest.raises(SpecError, match="outside the allowed data roots") as caught:
            check_spec(_csv_spec(path), options)
        assert caught.value.field == "dataset.path"
        assert not isinstance(caught.value, DatasetError)


def test_a_symlink_out_of_the_data_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.csv").write_text("a,y\n1,0\n")
    (root / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(SpecError, match="outside"):
        check_spec(_csv_spec(root / "link.csv"), TrainerOptions(data_roots=(root,)))


def test_no_data_roots_allows_no_csv(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,y\n1,0\n")
    with pytest.raises(SpecError, match="no data roots"):
        check_spec(_csv_spec(tmp_path / "d.csv"), TrainerOptions())


@pytest.mark.parametrize(
    ("content", "words"),
    [("", "is empty"), ("\n\n", "is empty"), ("a,y\n", "no data rows")],
)
def test_an_empty_csv_is_refused(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(DatasetError, match=words):
        check_spec(_csv_spec(tmp_path / "d.csv"), TrainerOptions(data_roots=(tmp_path,)))


def test_a_missing_target_or_feature_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n")
    options = TrainerOptions(data_roots=(tmp_path,))
    with pytest.raises(DatasetError, match=r"'label' is not in the header of d\.csv") as caught:
        check_spec(_csv_spec(tmp_path / "d.csv", target="label"), options)
    assert caught.value.field == "dataset.target"
    with pytest.raises(DatasetError, match=r"\['c'\] are not in the header of d\.csv") as caught:
        check_spec(_csv_spec(tmp_path / "d.csv", features=("a", "c")), options)
    assert caught.value.field == "dataset.features"


def test_a_factory_is_refused_unless_the_server_allows_it() -> None:
    spec = TrainingSpec(
        dataset=FactoryDataset(factory="tests.trainer.tiny_factory:sign_classifier")
    )
    with pytest.raises(SpecError, match="--allow-factory") as caught:
        check_spec(spec, TrainerOptions())
    assert caught.value.field == "dataset.factory"
    check_spec(spec, TrainerOptions(allow_factory=True))


def test_a_factory_module_that_does_not_exist_is_a_dataset_error() -> None:
    spec = TrainingSpec(dataset=FactoryDataset(factory="no_such_package.models:make"))
    with pytest.raises(DatasetError, match="no_such_package"):
        check_spec(spec, TrainerOptions(allow_factory=True))
