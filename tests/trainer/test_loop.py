"""The training loop on real tiny models: metrics, overfitting, determinism, cancel, failure."""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time

import pytest
import torch

from tests.trainer.conftest import ListSink
from trainer import (
    EarlyStoppingSpec,
    EpochRecord,
    ModelSpec,
    SpecError,
    StepRecord,
    SyntheticDataset,
    TrainingSpec,
)
from trainer import loop as loop_module
from trainer.loop import run_training

BLOBS = SyntheticDataset(name="blobs", n_samples=300)
SMALL = ModelSpec(hidden_sizes=(32,))


def test_a_short_run_on_the_easy_set_fills_every_field_and_the_loss_falls() -> None:
    spec = TrainingSpec(
        dataset=BLOBS, model=SMALL, epochs=5, learning_rate=0.01, log_every_n_steps=2
    )
    sink = ListSink()
    result = run_training(spec, sink)

    assert result.outcome == "completed" and result.epochs_completed == 5
    assert result.device == "cpu" and result.reason is None
    assert [r.epoch for r in sink.epochs] == [1, 2, 3, 4, 5]
    first, last = sink.epochs[0], sink.epochs[-1]
    assert last.train_loss < first.train_loss / 2
    assert last.val_loss is not None and first.val_loss is not None
    assert last.val_loss < first.val_loss / 2
    assert last.train_accuracy is not None and last.train_accuracy > 0.9
    assert last.val_accuracy is not None and last.val_accuracy > 0.9
    for r in sink.epochs:
        assert r.finite and r.learning_rate == 0.01
        assert 0 < r.epoch_duration_s < 10 and r.samples_per_s > 0 and r.grad_norm > 0
        assert r.timestamp > 1.7e9
    assert result.best_epoch is not None and result.best_value is not None
    # 240 training rows in batches of 32: 8 steps an epoch, logged every 2nd
    assert [s.step for s in sink.steps] == list(range(2, 41, 2))
    assert [s.epoch for s in sink.steps[:5]] == [1, 1, 1, 1, 2]


def test_on_noisy_spirals_a_large_model_overfits_val_loss_turns_up_as_train_loss_falls() -> None:
    sink = ListSink()
    run_training(TrainingSpec(log_every_n_steps=0), sink)  # the demo spec: 20 epochs
    val = [r.val_loss for r in sink.epochs if r.val_loss is not None]
    train = [r.train_loss for r in sink.epochs]
    best = val.index(min(val))
    assert 2 <= best <= 14  # it learns first: the minimum is not at the start
    assert val[0] > min(val) * 1.2
    assert val[-1] > min(val) * 1.3  # then it overfits
    assert train[-1] < train[best] * 0.6  # while training loss keeps falling


def test_the_same_spec_and_seed_give_identical_metrics() -> None:
    spec = TrainingSpec(epochs=3, model=ModelSpec(hidden_sizes=(64, 64), dropout=0.2))
    runs = [ListSink(), ListSink()]
    for sink in runs:
        run_training(spec, sink)
    timing = {"epoch_duration_s", "samples_per_s", "timestamp"}

    def values(sink: ListSink) -> list[dict[str, object]]:
        return [
            {k: v for k, v in dataclasses.asdict(r).items() if k not in timing} for r in sink.epochs
        ]

    assert values(runs[0]) == values(runs[1])
    assert [s.train_loss for s in runs[0].steps] == [s.train_loss for s in runs[1].steps]
    other = ListSink()
    run_training(spec.model_copy(update={"seed": 1}), other)
    assert values(other) != values(runs[0])


class _CancelAfter(ListSink):
    def __init__(self, steps: int, event: threading.Event) -> None:
        super().__init__()
        self._steps, self._event = steps, event

    def on_step(self, record: object) -> None:
        super().on_step(record)  # type: ignore[arg-type]
        if len(self.steps) == self._steps:
            self._event.set()


class _ArrivalSink(ListSink):
    """Notes when each record arrives: (kind, step or epoch, time.time())."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[str, int, float]] = []

    def on_epoch(self, record: EpochRecord) -> None:
        super().on_epoch(record)
        self.arrivals.append(("epoch", record.epoch, time.time()))

    def on_step(self, record: StepRecord) -> None:
        super().on_step(record)
        self.arrivals.append(("step", record.step, time.time()))


def test_logged_steps_wait_on_the_device_and_go_out_with_their_epoch() -> None:
    sink = _ArrivalSink()
    spec = TrainingSpec(dataset=BLOBS, model=SMALL, epochs=3, log_every_n_steps=1)
    run_training(spec, sink)  # 8 steps an epoch, each logged
    kinds = [kind for kind, _, _ in sink.arrivals]
    assert kinds == (["step"] * 8 + ["epoch"]) * 3
    for epoch in range(3):
        steps = sink.steps[8 * epoch : 8 * epoch + 8]
        first_arrival = sink.arrivals[9 * epoch][2]
        # no step was sent before the epoch's last one had trained (one device sync an epoch)
        assert first_arrival >= steps[-1].timestamp
        assert [s.timestamp for s in steps] == sorted(s.timestamp for s in steps)


def test_cancel_mid_epoch_stops_within_one_batch_and_keeps_finished_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "STEP_FLUSH_S", 0.0)  # each logged step goes out at once
    cancel = threading.Event()
    sink = _CancelAfter(13, cancel)  # 8 steps an epoch: step 13 is batch 5 of epoch 2
    spec = TrainingSpec(dataset=BLOBS, model=SMALL, epochs=5, log_every_n_steps=1)
    result = run_training(spec, sink, cancel=cancel)
    assert result.outcome == "cancelled"
    assert result.epochs_completed == 1 and len(sink.epochs) == 1
    assert len(sink.steps) == 13  # not one batch more
    assert result.reason == "cancelled during epoch 2, after 5 of 8 batches"


def test_a_cancel_set_before_the_start_trains_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    sink = ListSink()
    result = run_training(TrainingSpec(dataset=BLOBS, model=SMALL), sink, cancel=cancel)
    assert (result.outcome, result.epochs_completed, sink.epochs) == ("cancelled", 0, [])


def test_a_non_finite_loss_fails_the_same_whether_steps_go_out_each_or_with_their_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = TrainingSpec(
        dataset=BLOBS, model=SMALL, optimizer="sgd", learning_rate=100.0, log_every_n_steps=1
    )
    with_epoch = ListSink()
    first = run_training(spec, with_epoch)
    monkeypatch.setattr(loop_module, "STEP_FLUSH_S", 0.0)  # a sync at every logged step
    each = ListSink()
    second = run_training(spec, each)
    assert first.outcome == second.outcome == "failed" and first.reason == second.reason
    steps = [(s.step, s.train_loss) for s in with_epoch.steps]
    assert steps == [(s.step, s.train_loss) for s in each.steps] and steps
    assert all(math.isfinite(loss) for _, loss in steps)  # every step before the broken one


def test_a_huge_learning_rate_fails_with_the_epoch_and_step_of_the_non_finite_loss() -> None:
    spec = TrainingSpec(dataset=BLOBS, model=SMALL, optimizer="sgd", learning_rate=100.0, epochs=5)
    sink = ListSink()
    result = run_training(spec, sink)
    assert result.outcome == "failed"
    assert result.reason is not None
    found = re.fullmatch(
        r"train_loss became (nan|inf|-inf) at epoch (\d+), step (\d+) .*", result.reason
    )
    assert found is not None, result.reason
    epoch, step = int(found[2]), int(found[3])
    assert (
        result.epochs_completed == len(sink.epochs) == epoch - 1
    )  # the broken epoch is not emitted
    assert 8 * (epoch - 1) < step <= 8 * epoch
    assert all(r.finite for r in sink.epochs)


def test_with_check_finite_off_a_diverged_run_keeps_going() -> None:
    stopping = EarlyStoppingSpec(check_finite=False, patience=None)
    spec = TrainingSpec(
        dataset=BLOBS,
        model=SMALL,
        optimizer="sgd",
        learning_rate=100.0,
        epochs=3,
        early_stopping=stopping,
    )
    sink = ListSink()
    assert run_training(spec, sink).outcome == "completed"
    assert not math.isfinite(sink.epochs[-1].train_loss)


def test_early_stopping_ends_the_run_with_the_criterion_and_its_numbers() -> None:
    stopping = EarlyStoppingSpec(patience=3)
    sink = ListSink()
    result = run_training(TrainingSpec(epochs=40, early_stopping=stopping), sink)
    assert result.outcome == "early_stopped"
    assert result.best_epoch is not None
    assert result.epochs_completed == result.best_epoch + 3 == len(sink.epochs)
    assert result.reason is not None and "val_loss did not improve" in result.reason
    assert f"at epoch {result.best_epoch}" in result.reason


def test_a_regression_run_reports_no_accuracy() -> None:
    spec = TrainingSpec(dataset=SyntheticDataset(name="sine", n_samples=200), model=SMALL, epochs=3)
    sink = ListSink()
    assert run_training(spec, sink).outcome == "completed"
    assert all(r.train_accuracy is None and r.val_accuracy is None for r in sink.epochs)
    assert sink.epochs[-1].train_loss < sink.epochs[0].train_loss


def test_without_a_validation_split_train_loss_is_the_best_epoch_monitor() -> None:
    spec = TrainingSpec(dataset=BLOBS, model=SMALL, epochs=3, val_fraction=0)
    sink = ListSink()
    result = run_training(spec, sink)
    assert all(r.val_loss is None and r.val_accuracy is None for r in sink.epochs)
    assert result.best_value == min(r.train_loss for r in sink.epochs)


def test_the_schedule_changes_the_learning_rate_each_epoch() -> None:
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 100},
            "model": {"hidden_sizes": [8]},
            "epochs": 4,
            "learning_rate": 0.1,
            "schedule": {"kind": "step", "step_size": 2, "gamma": 0.5},
        }
    )
    sink = ListSink()
    run_training(spec, sink)
    assert [r.learning_rate for r in sink.epochs] == [0.1, 0.1, 0.05, 0.05]


def test_cosine_annealing_with_gradient_clipping_lowers_the_learning_rate() -> None:
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 100},
            "model": {"hidden_sizes": [8], "activation": "tanh"},
            "optimizer": "adamw",
            "epochs": 4,
            "grad_clip": 0.5,
            "schedule": {"kind": "cosine"},
        }
    )
    sink = ListSink()
    assert run_training(spec, sink).outcome == "completed"
    rates = [r.learning_rate for r in sink.epochs]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]


def test_reduce_on_plateau_cuts_the_learning_rate_when_val_loss_stalls() -> None:
    # at lr 1e-6 val_loss cannot improve by the relative threshold, so every epoch after the
    # first is a bad one; PyTorch cuts once bad epochs exceed patience (here 0)
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 100},
            "model": {"hidden_sizes": [8]},
            "optimizer": "sgd",
            "learning_rate": 1e-6,
            "epochs": 4,
            "schedule": {"kind": "reduce_on_plateau", "patience": 0, "factor": 0.5},
        }
    )
    sink = ListSink()
    run_training(spec, sink)
    assert [r.learning_rate for r in sink.epochs] == [1e-6, 1e-6, 5e-7, 2.5e-7]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_fails_before_training_naming_the_device() -> None:
    sink = ListSink()
    with pytest.raises(SpecError, match="'cuda' is not available") as caught:
        run_training(TrainingSpec(dataset=BLOBS, model=SMALL, device="cuda"), sink)
    assert caught.value.field == "device"
    assert sink.epochs == []


def test_dropout_runs_are_repeatable_even_when_another_run_trains_beside_them() -> None:
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"kind": "synthetic", "name": "blobs", "n_samples": 300},
            "model": {"hidden_sizes": [32], "dropout": 0.5},
            "epochs": 2,
            "batch_size": 16,
        }
    )
    alone = ListSink()
    run_training(spec, alone)
    side, other = ListSink(), ListSink()
    threads = [threading.Thread(target=run_training, args=(spec, sink)) for sink in (side, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def losses(sink: ListSink) -> list[float]:
        return [r.train_loss for r in sink.epochs]

    assert losses(side) == losses(alone) == losses(other)
