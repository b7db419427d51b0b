"""Mini-batches on the training device, and train-accuracy counting that stays off the hot path."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from trainer.errors import SpecError

__all__ = ["Batches", "HitCounter", "resolve_device"]


class Batches:
    """Iterates `(x, y)` batches on `device`, in a fresh seeded order each pass when `shuffle`.

    In-memory tensors (a `TensorDataset`) move to the device once and are sliced there; any other
    dataset goes through a `DataLoader` and each batch is moved as it comes.
    """

    def __init__(
        self,
        dataset: Dataset[tuple[Tensor, ...]],
        batch_size: int,
        device: torch.device,
        *,
        seed: int = 0,
        shuffle: bool = False,
    ) -> None:
        self.device = device
        self.rows = len(cast(Sized, dataset))  # map-style datasets are sized
        self._batch_size = batch_size
        self._shuffle = shuffle
        self._generator = torch.Generator().manual_seed(seed + 2)
        self._tensors: tuple[Tensor, Tensor] | None = None
        self._loader: DataLoader[tuple[Tensor, ...]] | None = None
        if isinstance(dataset, TensorDataset):
            x, y = dataset.tensors
            self._tensors = (x.to(device), y.to(device))
        else:
            self._loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=shuffle, generator=self._generator
            )

    def __len__(self) -> int:
        return math.ceil(self.rows / self._batch_size)

    def rng_state(self) -> Tensor:
        """The data-order generator's state, for a checkpoint to resume the same order from."""
        return self._generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self._generator.set_state(state)

    def sizes(self) -> list[int]:
        """Rows in each batch of a pass: all full but the last (nothing is dropped)."""
        full, rest = divmod(self.rows, self._batch_size)
        return [self._batch_size] * full + ([rest] if rest else [])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._loader is not None:
            for x, y in self._loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        assert self._tensors is not None
        x, y = self._tensors
        if not self._shuffle:
            for start in range(0, self.rows, self._batch_size):
                yield x[start : start + self._batch_size], y[start : start + self._batch_size]
            return
        order = torch.randperm(self.rows, generator=self._generator).to(self.device)
        for start in range(0, self.rows, self._batch_size):
            index = order[start : start + self._batch_size]
            yield x[index], y[index]


class HitCounter:
    """Counts correct classifications, batching the argmax over ~64k rows instead of per step."""

    _CHUNK = 65_536

    def __init__(self) -> None:
        self._outputs: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._rows = 0
        self._correct = 0

    def add(self, logits: Tensor, targets: Tensor) -> None:
        self._outputs.append(logits)
        self._targets.append(targets)
        self._rows += len(targets)
        if self._rows >= self._CHUNK:
            self._flush()

    def total(self) -> int:
        self._flush()
        return self._correct

    def _flush(self) -> None:
        if self._outputs:
            predicted = torch.cat(self._outputs).argmax(dim=1)
            self._correct += int((predicted == torch.cat(self._targets)).sum())
            self._outputs, self._targets, self._rows = [], [], 0


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda if available, else mps, else cpu; an unavailable device is refused."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise SpecError("device", f"{name!r} is not available on this host; use 'auto' or 'cpu'")
    return torch.device(name)
