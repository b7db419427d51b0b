"""The built-in model: an MLP described by `ModelSpec`, initialised from the run's seed."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.spec import ModelSpec

__all__ = ["build_mlp"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def build_mlp(spec: ModelSpec, n_features: int, n_outputs: int, *, seed: int) -> nn.Sequential:
    """Linear -> activation (-> Dropout) per hidden size, then a Linear head to `n_outputs`.

    Weights are drawn from a generator seeded with `seed` (PyTorch's default Linear init), not from
    the global one, so two runs training side by side in one process still start identically.
    """
    layers: list[nn.Module] = []
    width = n_features
    for size in spec.hidden_sizes:
        layers += [nn.Linear(width, size), _ACTIVATIONS[spec.activation]()]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return model
