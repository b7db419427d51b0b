"""Starting a run from a checkpoint: resume the same spec, or fork with changed hyperparameters.

One path serves both. The model's weights must fit the spec's model (a fork keeps the shape;
dropout layers added or removed are fine: the weights keep their order). The optimizer's state
carries over when the optimizer is the same kind, with the spec's learning rate (unless the
schedule carries on), weight decay and momentum applied to it. The scheduler's state carries over
when the schedule and learning rate are unchanged (and, for cosine, the epochs); otherwise a fresh
schedule spans the epochs left. The early stopper replays the stored history under the spec's
rules, so changed early stopping applies from the first new epoch. Epochs continue from the
checkpoint's: `spec.epochs` is the number the run ends at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.checkpoints import Checkpoint, Checkpointer, checkpoint_spec, load_checkpoint
from trainer.errors import SpecError
from trainer.retention import epoch_file
from trainer.spec import TrainingSpec
from trainer.stopping import EarlyStopper

__all__ = ["Start", "load_start", "load_weights"]


@dataclass
class Start:
    """Where a run starts: after `epoch` (0 for a fresh run), at global `step`."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] | None = None
    scheduler_state: dict[str, Any] | None = None
    checkpoint: Checkpoint | None = None
    best_state: dict[str, Tensor] | None = None


def load_start(
    path: Path,
    spec: TrainingSpec,
    *,
    model: nn.Module,
    optimizer: Optimizer,
    stopper: EarlyStopper,
    device: torch.device,
    keep_best: bool,
    checkpointer: Checkpointer | None,
) -> Start:
    """Load `path` into the model and optimizer, replay the stopper; raises `SpecError` when the
    checkpoint cannot start this spec."""
    if not path.is_file():
        raise SpecError("start_from", f"no checkpoint at {path}")
    checkpoint = load_checkpoint(path, map_location=device)
    old = checkpoint_spec(checkpoint)
    epoch = checkpoint["epoch"]
    if spec.epochs <= epoch:
        raise SpecError(
            "epochs",
            f"the checkpoint is at epoch {epoch}; epochs must be more than that "
            f"(it is the epoch the run ends at), got {spec.epochs}",
        )
    load_weights(model, checkpoint["model"])
    carry_schedule = old.schedule == spec.schedule and old.learning_rate == spec.learning_rate
    if spec.schedule.kind == "cosine" and old.epochs != spec.epochs:
        carry_schedule = False
    if old.optimizer == spec.optimizer:
        optimizer.load_state_dict(checkpoint["optimizer"])
    else:
        carry_schedule = False
    for group in optimizer.param_groups:
        group["weight_decay"] = spec.weight_decay
        if "momentum" in group and spec.optimizer == "sgd":
            group["momentum"] = spec.momentum
        if not carry_schedule:
            group["lr"] = spec.learning_rate
            group.pop("initial_lr", None)  # a fresh scheduler records the new base rate
    history = list(checkpoint["history"])
    for i, metrics in enumerate(history, start=1):
        stopper.update(i, metrics)  # rebuild its state; past decisions are history
    start = Start(
        epoch=epoch,
        step=checkpoint["step"],
        history=history,
        scheduler_state=checkpoint["scheduler"] if carry_schedule else None,
        checkpoint=checkpoint,
    )
    best = stopper.best_epoch
    best_path = path.parent / epoch_file(best) if best is not None else None
    has_best = best_path is not None and (best == epoch or best_path.is_file())
    if keep_best and best is not None and has_best:
        weights = checkpoint["model"] if best == epoch else _model_state(best_path, device)
        start.best_state = {k: v.detach().clone() for k, v in weights.items()}
    if checkpointer is not None:
        if best is not None and best != epoch and best_path is not None and best_path.is_file():
            checkpointer.adopt(best_path, best, last=False, best=True)
        checkpointer.adopt(path, epoch, last=True, best=best == epoch)
    return start


def _model_state(path: Path | None, device: torch.device) -> dict[str, Tensor]:
    assert path is not None
    return load_checkpoint(path, map_location=device)["model"]


def load_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """Load `state`; where dropout layers were added or removed (the indices moved) the tensors
    are matched in order. A different shape is refused, naming both."""
    own = model.state_dict()
    if own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own):
        model.load_state_dict(state)
        return
    mine, theirs = list(own.values()), list(state.values())
    if len(mine) == len(theirs) and all(
        a.shape == b.shape for a, b in zip(mine, theirs, strict=True)
    ):
        model.load_state_dict(dict(zip(own.keys(), theirs, strict=True)))
        return
    raise SpecError(
        "model",
        f"the checkpoint's model ({_shapes(theirs)}) does not fit this spec's ({_shapes(mine)}); "
        "a run started from a checkpoint keeps the model's shape",
    )


def _shapes(tensors: list[Any]) -> str:
    weights = [tuple(t.shape) for t in tensors if t.dim() == 2]
    return "layers " + " -> ".join(f"{w[1]}x{w[0]}" for w in weights) if weights else "no layers"
