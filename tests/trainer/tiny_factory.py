"""Factories the trainer tests import by name ("tests.trainer.tiny_factory:...")."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from trainer import TrainingSpec


class PairList(Dataset[tuple[Tensor, Tensor]]):
    """A plain map-style dataset (not a TensorDataset), so the loop goes through a DataLoader."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


def _points(seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 3, generator=g)
    return x, (x.sum(dim=1) > 0).long()


def sign_classifier(spec: TrainingSpec) -> tuple[nn.Module, Dataset[tuple[Tensor, ...]], None]:
    """Tensors in memory, no validation set."""
    x, y = _points(spec.seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, TensorDataset(x, y), None


def sign_classifier_with_val(
    spec: TrainingSpec,
) -> tuple[nn.Module, PairList, PairList]:
    """A custom Dataset class with a validation split."""
    x, y = _points(spec.seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, PairList(x[:64], y[:64]), PairList(x[64:], y[64:])


def broken(spec: TrainingSpec) -> tuple[nn.Module, None, None]:
    raise RuntimeError("the user's code is broken")


def wrong_shape(spec: TrainingSpec) -> str:
    return "not a tuple"
