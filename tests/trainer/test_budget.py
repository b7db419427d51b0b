"""The resource budget's estimates and refusals, and the checkpoints' disk budget (pure)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from trainer.budget import ResourceLimits, check_budget, estimate_resources
from trainer.checkpoint_budget import delete_run, prune_run, prune_total, run_bytes
from trainer.errors import SpecError
from trainer.spec import TrainingSpec

GIB = 1024**3


def _spec(**fields: object) -> TrainingSpec:
    return TrainingSpec.model_validate(fields)


def test_parameters_are_counted_exactly_for_an_mlp() -> None:
    spec = _spec(dataset={"kind": "synthetic", "name": "blobs"}, model={"hidden_sizes": [16, 8]})
    estimate = estimate_resources(spec)
    assert estimate is not None
    assert estimate.parameters == (2 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)
    # Adam: weights and two moments, in best.pt and last.pt
    assert estimate.checkpoint_bytes == 2 * estimate.parameters * 4 * 3
    assert estimate.dataset_rows == 1000


def test_the_findings_specs_are_refused_naming_field_estimate_and_limit() -> None:
    limits = ResourceLimits.for_memory(8 * GIB)
    huge = _spec(model={"hidden_sizes": [65536] * 64})
    with pytest.raises(SpecError) as err:
        check_budget(estimate_resources(huge), limits)
    assert err.value.field == "model.hidden_sizes"
    assert "parameters estimated at 270," in str(err.value) and "--max-parameters" in str(err.value)
    rows = _spec(dataset={"kind": "synthetic", "name": "sine", "n_samples": 10_000_000})
    with pytest.raises(SpecError) as err:
        check_budget(estimate_resources(rows), limits)
    assert err.value.field == "dataset.n_samples"
    assert "10,000,000" in str(err.value) and "4,194,304" in str(err.value)
    wide = _spec(model={"hidden_sizes": [8192] * 4}, epochs=1)
    small_disk = ResourceLimits(None, None, None, max_checkpoint_bytes=GIB)
    with pytest.raises(SpecError) as err:
        check_budget(estimate_resources(wide), small_disk)
    assert err.value.field == "model.hidden_sizes"
    assert "checkpoints" in str(err.value) and "1.0 GiB" in str(err.value)
    batch = _spec(batch_size=1_000_000, dataset={"kind": "synthetic", "n_samples": 2_000_000})
    with pytest.raises(SpecError) as err:
        check_budget(estimate_resources(batch), ResourceLimits(None, 64 * 1024**2, None, None))
    assert err.value.field == "batch_size"


def test_the_demo_fits_a_small_machine_and_no_limits_checks_nothing() -> None:
    check_budget(estimate_resources(TrainingSpec()), ResourceLimits.for_memory(2 * GIB))
    check_budget(estimate_resources(_spec(model={"hidden_sizes": [65536] * 64})), None)
    off = ResourceLimits(None, None, None, None)
    check_budget(estimate_resources(_spec(model={"hidden_sizes": [65536] * 64})), off)


def _write(path: Path, size: int, age_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_a_run_is_pruned_oldest_first_and_keeps_best_and_last(tmp_path: Path) -> None:
    run = tmp_path / "op-a"
    for epoch, age in ((1, 50), (2, 40), (3, 30)):
        _write(run / f"epoch-{epoch}.pt", 100, age)
    _write(run / "best.pt", 100, 60)
    _write(run / "last.pt", 100, 20)
    deleted = prune_run(run, 300)
    assert [p.name for p in deleted] == ["epoch-1.pt", "epoch-2.pt"]
    assert run_bytes(run) == 300
    assert prune_run(run, 0) == [run / "epoch-3.pt"]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt"]


def test_the_total_is_pruned_by_whole_runs_oldest_first_never_an_active_one(
    tmp_path: Path,
) -> None:
    for name, age in (("op-old", 300), ("op-mid", 200), ("op-new", 100), ("op-live", 400)):
        _write(tmp_path / name / "last.pt", 1000, age)
    deleted = prune_total(tmp_path, 2000, active={"op-live"})
    assert [p.name for p in deleted] == ["op-old", "op-mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["op-live", "op-new"]
    assert prune_total(tmp_path, None) == []
    assert delete_run(tmp_path, "op-new") == 1000
    assert delete_run(tmp_path, "../etc") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["op-live"]
