"""The optimizer and learning-rate schedule a spec asks for, and the global gradient norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from trainer.spec import TrainingSpec

__all__ = ["Scheduler", "grad_norm", "make_optimizer", "make_scheduler", "step_scheduler"]

Scheduler = LRScheduler | ReduceLROnPlateau


def make_optimizer(spec: TrainingSpec, params: Sequence[nn.Parameter]) -> Optimizer:
    """sgd (with `momentum`), adam (L2 `weight_decay`) or adamw (decoupled `weight_decay`)."""
    lr, decay = spec.learning_rate, spec.weight_decay
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)


def make_scheduler(
    spec: TrainingSpec, optimizer: Optimizer, epochs: int | None = None
) -> Scheduler | None:
    """PyTorch's scheduler for `spec.schedule`, stepped once per epoch; None for constant.

    `epochs`: how many epochs it schedules (cosine's span), default `spec.epochs`; a run started
    from a checkpoint schedules the epochs it has left."""
    s = spec.schedule
    if s.kind == "step":
        return StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.kind == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs or spec.epochs, eta_min=s.min_lr)
    if s.kind == "reduce_on_plateau":
        return ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            cooldown=s.cooldown,
            min_lr=s.min_lr,
        )
    return None


def step_scheduler(scheduler: Scheduler | None, monitored: float) -> None:
    """End-of-epoch step; reduce-on-plateau watches `monitored` (val_loss, else train_loss)."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(monitored)
    elif scheduler is not None:
        scheduler.step()


def grad_norm(params: Sequence[nn.Parameter]) -> Tensor:
    """The global L2 norm of all gradients (as `clip_grad_norm_` measures it), on the device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    # One fused kernel for every tensor's norm (what clip_grad_norm_ uses), not one per tensor.
    total: Tensor = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return total
