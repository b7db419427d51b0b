"""The built-in model: an MLP described by `ModelSpec`, initialised from the run's seed."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.spec import ModelSpec

__all__ = ["SeededDropout", "build_mlp"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class SeededDropout(nn.Module):
    """Dropout whose masks come from its own generator, not torch's global one, so two runs
    training side by side in one process (the server's worker threads) stay repeatable."""

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        self.p = p
        self.seed = seed
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)

    def rng_state(self) -> torch.Tensor | None:
        """The mask generator's state (None before the first mask is drawn)."""
        return None if self._generator is None else self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        self._generator = torch.Generator(device=device)
        self._generator.set_state(state)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


def build_mlp(spec: ModelSpec, n_features: int, n_outputs: int, *, seed: int) -> nn.Sequential:
    """Linear -> activation (-> Dropout) per hidden size, then a Linear head to `n_outputs`.

    Weights are drawn from a generator seeded with `seed` (PyTorch's default Linear init) and
    dropout masks from per-layer generators, never from the global one, so two runs training side
    by side in one process still train identically.
    """
    layers: list[nn.Module] = []
    width = n_features
    for index, size in enumerate(spec.hidden_sizes):
        layers += [nn.Linear(width, size), _ACTIVATIONS[spec.activation]()]
        if spec.dropout > 0:
            layers.append(SeededDropout(spec.dropout, seed=seed + 100 + index))
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
