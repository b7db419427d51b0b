from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from trainer import EpochRecord, StepRecord


class ListSink:
    """A MetricSink that keeps every record, for assertions."""

    def __init__(self) -> None:
        self.epochs: list[EpochRecord] = []
        self.steps: list[StepRecord] = []

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs.append(record)

    def on_step(self, record: StepRecord) -> None:
        self.steps.append(record)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and runs do not fight over the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
