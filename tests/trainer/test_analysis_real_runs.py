"""Loss analysis on real training runs: the trainer's overfitting set, and its easy one."""

from __future__ import annotations

from typing import Literal

from trainer.analysis import EpochMetrics, LossAnalysis, LossAnalyzer, analyze_loss
from trainer.loop import run_training
from trainer.records import EpochRecord, StepRecord
from trainer.spec import SyntheticDataset, TrainingSpec


class AnalysingSink:
    """Keeps every epoch record and feeds it to an incremental analyzer, as ingestion does."""

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []
        self.analyzer = LossAnalyzer()

    def on_epoch(self, record: EpochRecord) -> None:
        self.records.append(record)
        self.analyzer.add(EpochMetrics.from_record(record))

    def on_step(self, record: StepRecord) -> None:
        pass


def train(
    dataset: Literal["blobs", "noisy_spirals"], epochs: int
) -> tuple[list[EpochRecord], LossAnalysis]:
    spec = TrainingSpec(
        dataset=SyntheticDataset(name=dataset),
        epochs=epochs,
        seed=0,
        device="cpu",
        log_every_n_steps=0,
    )
    sink = AnalysingSink()

    result = run_training(spec, sink)

    assert result.outcome == "completed", result.reason
    assert len(sink.records) == epochs
    analysis = sink.analyzer.result()
    assert analysis == analyze_loss([EpochMetrics.from_record(r) for r in sink.records])
    return sink.records, analysis


def true_val_minimum(records: list[EpochRecord]) -> int:
    measured = [r for r in records if r.val_loss is not None]
    return min(measured, key=lambda r: r.val_loss or 0.0).epoch


def test_a_run_on_noisy_spirals_is_overfitting_with_the_best_epoch_at_the_val_loss_minimum() -> (
    None
):
    records, analysis = train("noisy_spirals", epochs=20)

    assert analysis.verdict == "overfitting", analysis.reasons
    assert analysis.best_epoch is not None
    assert abs(analysis.best_epoch - true_val_minimum(records)) <= 1
    assert analysis.recommendation in ("stop_and_restore_best", "add_regularization")


def test_a_run_on_blobs_is_not_overfitting() -> None:
    _, analysis = train("blobs", epochs=20)

    assert analysis.verdict != "overfitting", analysis.reasons
    assert "overfitting" not in {flag.name for flag in analysis.flags}
