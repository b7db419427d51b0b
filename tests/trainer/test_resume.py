"""Starting from a checkpoint: a resumed run trains exactly as if it had never stopped; a fork
continues the numbering with its changes applied; what cannot apply is refused; retention keeps
best and last within the budget."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.trainer.conftest import ListSink
from trainer import EpochRecord, ModelSpec, ScheduleSpec, SpecError, TrainerOptions, TrainingSpec
from trainer.checkpoints import load_checkpoint
from trainer.loop import run_training
from trainer.retention import BEST, INDEX, LAST, epoch_file, read_index, retained_epochs

SPEC = TrainingSpec(
    model=ModelSpec(hidden_sizes=(32, 32), dropout=0.2),
    epochs=6,
    schedule=ScheduleSpec(kind="step", step_size=2, gamma=0.5),
    learning_rate=0.01,
)


class StopAfter(ListSink):
    """Cancels the run once `epoch` is done: the next epoch's first batch sees it."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.cancel = threading.Event()
        self._epoch = epoch

    def on_epoch(self, record: EpochRecord) -> None:
        super().on_epoch(record)
        if record.epoch == self._epoch:
            self.cancel.set()


def _values(records: list[EpochRecord]) -> list[tuple[int, float, float | None, float]]:
    return [(r.epoch, r.train_loss, r.val_loss, r.learning_rate) for r in records]


def test_a_run_resumed_from_its_last_checkpoint_trains_exactly_as_one_that_never_stopped(
    tmp_path: Path,
) -> None:
    straight = ListSink()
    run_training(SPEC, straight)

    first = StopAfter(3)
    options = TrainerOptions(artifact_dir=tmp_path / "run")
    stopped = run_training(SPEC, first, cancel=first.cancel, options=options)
    assert (stopped.outcome, stopped.epochs_completed) == ("cancelled", 3)
    rest = ListSink()
    result = run_training(SPEC, rest, options=options, start_from=tmp_path / "run" / LAST)

    assert result.outcome == "completed" and result.epochs_completed == 6
    assert [r.epoch for r in rest.epochs] == [4, 5, 6]
    # model, optimizer, schedule, dropout masks and data order all carried over: same numbers
    assert _values(first.epochs + rest.epochs) == _values(straight.epochs)
    steps = [(r.step, r.train_loss) for r in first.steps + rest.steps]
    assert steps == [(r.step, r.train_loss) for r in straight.steps]  # the global step goes on


def test_a_fork_continues_the_numbering_with_a_lower_rate_and_its_own_folder(
    tmp_path: Path,
) -> None:
    parent = ListSink()
    run_training(SPEC, parent, options=TrainerOptions(artifact_dir=tmp_path / "parent"))
    index = read_index(tmp_path / "parent")
    assert index.last == 6 and index.best is not None
    best = index.best

    child_spec = SPEC.model_copy(
        update={"learning_rate": 0.001, "epochs": best + 3, "batch_size": 64}
    )
    child = ListSink()
    result = run_training(
        child_spec,
        child,
        options=TrainerOptions(artifact_dir=tmp_path / "child"),
        start_from=tmp_path / "parent" / epoch_file(best),
    )
    assert [r.epoch for r in child.epochs] == [best + 1, best + 2, best + 3]
    assert result.epochs_completed == best + 3
    assert child.epochs[0].learning_rate == pytest.approx(0.001)  # a fresh schedule at the new rate
    child_index = read_index(tmp_path / "child")
    assert child_index.last == best + 3 and child_index.best in child_index.epochs
    last = load_checkpoint(tmp_path / "child" / LAST)
    assert len(last["history"]) == best + 3  # the parent's epochs up to the fork, then the child's


def test_a_fork_that_changes_the_model_shape_or_ends_before_the_checkpoint_is_refused(
    tmp_path: Path,
) -> None:
    run_training(SPEC, ListSink(), options=TrainerOptions(artifact_dir=tmp_path))
    wider = SPEC.model_copy(update={"model": ModelSpec(hidden_sizes=(64, 32))})
    with pytest.raises(SpecError, match="keeps the model's shape") as info:
        run_training(wider.model_copy(update={"epochs": 9}), ListSink(), start_from=tmp_path / LAST)
    assert info.value.field == "model"
    with pytest.raises(SpecError, match="epochs must be more than that") as early:
        run_training(SPEC, ListSink(), start_from=tmp_path / LAST)
    assert early.value.field == "epochs"
    no_dropout = SPEC.model_copy(update={"model": ModelSpec(hidden_sizes=(32, 32)), "epochs": 8})
    result = run_training(no_dropout, ListSink(), start_from=tmp_path / LAST)
    assert result.epochs_completed == 8  # dropout removed: the same weights, in order


def test_without_a_budget_only_the_best_and_last_epochs_are_kept_and_a_budget_keeps_more(
    tmp_path: Path,
) -> None:
    run_training(SPEC, ListSink(), options=TrainerOptions(artifact_dir=tmp_path / "tight"))
    tight = read_index(tmp_path / "tight")
    files = sorted(p.name for p in (tmp_path / "tight").iterdir())
    kept = sorted(e for e in {tight.best, tight.last} if e is not None)
    assert list(tight.epochs) == kept
    assert files == sorted([BEST, LAST, INDEX, *(epoch_file(e) for e in kept)])

    roomy = TrainerOptions(artifact_dir=tmp_path / "roomy", checkpoint_budget_bytes=10**9)
    run_training(SPEC, ListSink(), options=roomy)
    assert read_index(tmp_path / "roomy").epochs == (1, 2, 3, 4, 5, 6)


def test_retention_keeps_best_and_last_then_the_newest_that_fit() -> None:
    sizes = {e: 100 for e in range(1, 11)}
    assert retained_epochs(sizes, best=3, last=10, budget_bytes=0) == {3, 10}
    assert retained_epochs(sizes, best=3, last=10, budget_bytes=250) == {3, 10, 9, 8}
    assert retained_epochs({}, best=None, last=None, budget_bytes=10) == set()
