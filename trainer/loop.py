"""The training loop: one explicit function that reads top to bottom, nanoGPT style.

It emits an `EpochRecord` per epoch and a `StepRecord` every `log_every_n_steps` batches to the sink
it is given, and does no I/O other than checkpoints. Same spec and seed on CPU give the same
metrics (durations and timestamps aside); dropout draws from torch's global generator, so runs that
use dropout are only repeatable when they do not train side by side in one process.

What the metrics mean: train_loss and train_accuracy are means over the epoch's batches in train
mode (as Keras reports them); val_loss and val_accuracy are measured in eval mode after the epoch;
`grad_norm` is the global L2 gradient norm of the epoch's last batch (before clipping), not a
per-batch mean; samples_per_s counts the training phase only; learning_rate is the rate the epoch
trained with.

Hot-path choices, so metrics cost a bare loop next to nothing (bench/trainer_overhead.py measures
it): batch losses stay on the device until the epoch ends, logged step losses with them (one sync
per epoch; in an epoch longer than `STEP_FLUSH_S`, one that often: the steps are sent then, each
with the wall time it trained at), and train accuracy is counted in chunks of ~64k rows rather
than per batch. A non-finite loss fails the run at the next sync, naming its batch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.batches import Batches, HitCounter, resolve_device
from trainer.checkpoints import Checkpointer, capture_random_state, restore_random_state
from trainer.datasets import Data, load_data
from trainer.errors import DatasetError, SpecError
from trainer.models import build_mlp
from trainer.optim import grad_norm, make_optimizer, make_scheduler, step_scheduler
from trainer.preflight import TrainerOptions, check_spec
from trainer.records import EpochRecord, MetricSink, RunOutcome, RunResult, StepRecord
from trainer.resume import Start, load_start
from trainer.retention import LAST
from trainer.spec import EarlyStoppingSpec, MonitorName, TrainingSpec
from trainer.stopping import EarlyStopper

__all__ = ["Trained", "run_training", "train"]

LossFn = Callable[[Tensor, Tensor], Tensor]
_NO_OPTIONS = TrainerOptions()  # no data roots, no factories, no checkpoints
# Logged step losses wait on the device and go out with their epoch; inside a longer epoch they
# go about this often (one device sync each time).
STEP_FLUSH_S = 1.0


@dataclass(frozen=True)
class Trained:
    """A finished run and its model (on the training device; the best weights if restored)."""

    result: RunResult
    model: nn.Module


def run_training(
    spec: TrainingSpec,
    sink: MetricSink,
    *,
    cancel: threading.Event | None = None,
    options: TrainerOptions = _NO_OPTIONS,
    start_from: Path | None = None,
) -> RunResult:
    """Train `spec`, sending records to `sink`; returns how the run ended.

    Raises `SpecError`/`DatasetError` before the first epoch when the spec or its data cannot run.
    Set `cancel` to stop within one batch (outcome "cancelled", finished epochs kept).
    `start_from`: a checkpoint file to start from (resume, or fork with a changed spec, see
    `trainer.resume`): epochs continue from its epoch up to `spec.epochs`.
    """
    return train(spec, sink, cancel=cancel, options=options, start_from=start_from).result


def train(
    spec: TrainingSpec,
    sink: MetricSink,
    *,
    cancel: threading.Event | None = None,
    options: TrainerOptions = _NO_OPTIONS,
    start_from: Path | None = None,
) -> Trained:
    """`run_training`, also returning the trained model."""
    # -- set-up: everything that can be wrong with the spec or data fails here, before epoch 1
    check_spec(spec, options)
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    device = resolve_device(spec.device)
    torch.manual_seed(spec.seed)  # dropout, and whatever a factory draws, use the global generator
    data = load_data(spec, options)
    stopper = EarlyStopper(_stopping_spec(spec, data))
    model = data.model or build_mlp(spec.model, data.n_features, data.n_outputs, seed=spec.seed)
    model.to(device)
    classification = data.task == "classification"
    loss_fn: LossFn = F.cross_entropy if classification else F.mse_loss
    _check_output_shape(model, data, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(spec, params)
    batches = Batches(data.train, spec.batch_size, device, seed=spec.seed, shuffle=True)
    val_batches = None if data.val is None else Batches(data.val, spec.batch_size, device)
    n_train, sizes, last_batch = batches.rows, batches.sizes(), len(batches) - 1
    clip, log_every = spec.grad_clip, spec.log_every_n_steps
    check_finite = spec.early_stopping is None or spec.early_stopping.check_finite
    keep_best = spec.early_stopping is not None and spec.early_stopping.restore_best_weights
    artifacts = options.artifact_dir
    checkpointer = (
        None if artifacts is None else Checkpointer(artifacts, options.checkpoint_budget_bytes)
    )
    start = Start()
    if start_from is not None:
        start = load_start(
            start_from,
            spec,
            model=model,
            optimizer=optimizer,
            stopper=stopper,
            device=device,
            keep_best=keep_best,
            checkpointer=checkpointer,
        )
    scheduler = make_scheduler(spec, optimizer, epochs=spec.epochs - start.epoch)
    if scheduler is not None and start.scheduler_state is not None:
        scheduler.load_state_dict(start.scheduler_state)
    if start.checkpoint is not None:
        restore_random_state(start.checkpoint["rng"], model, batches, device)
    history = start.history or []  # every epoch's metrics, for the checkpoints
    best_state = start.best_state
    step = start.step

    def finish(outcome: RunOutcome, epochs: int, reason: str | None) -> Trained:
        if best_state is not None:
            model.load_state_dict(best_state)
        result = RunResult(
            outcome=outcome,
            epochs_completed=epochs,
            device=str(device),
            reason=reason,
            best_epoch=stopper.best_epoch,
            best_value=stopper.best_value,
            checkpoint_dir=str(artifacts) if artifacts and (artifacts / LAST).exists() else None,
        )
        return Trained(result, model)

    for epoch in range(start.epoch + 1, spec.epochs + 1):
        # -- train one epoch
        started = time.perf_counter()
        model.train()
        learning_rate = float(optimizer.param_groups[0]["lr"])
        losses: list[Tensor] = []
        logged: list[tuple[int, int, float]] = []  # (batch, step, wall time) not yet sent
        batch_losses: list[float] = []  # read from the device so far
        flush_at = started + STEP_FLUSH_S
        hits = HitCounter()
        last_norm: Tensor | None = None
        for i, (x, y) in enumerate(batches):
            if cancel is not None and cancel.is_set():
                if logged:  # what trained before the cancel
                    _send_steps(
                        sink, epoch, logged, batch_losses, _read(losses, batch_losses), check_finite
                    )
                reason = f"cancelled during epoch {epoch}, after {i} of {len(batches)} batches"
                return finish("cancelled", epoch - 1, reason)
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            if clip is not None:
                last_norm = nn.utils.clip_grad_norm_(params, clip)
            elif i == last_batch:
                last_norm = grad_norm(params)
            optimizer.step()
            step += 1
            losses.append(loss.detach())
            if classification:
                hits.add(out.detach(), y)
            if log_every and step % log_every == 0:
                logged.append((i, step, time.time()))
                if (now := time.perf_counter()) >= flush_at:  # a long epoch's steps so far
                    flush_at = now + STEP_FLUSH_S
                    fresh = _read(losses, batch_losses)
                    if not _send_steps(sink, epoch, logged, batch_losses, fresh, check_finite):
                        return finish("failed", epoch - 1, _nonfinite(batch_losses, epoch, step))
        train_seconds = time.perf_counter() - started
        fresh = _read(losses, batch_losses)  # the epoch's one device sync (in a short epoch)
        if not _send_steps(sink, epoch, logged, batch_losses, fresh, check_finite):
            return finish("failed", epoch - 1, _nonfinite(batch_losses, epoch, step))
        train_loss = sum(v * n for v, n in zip(batch_losses, sizes, strict=True)) / n_train

        # -- evaluate, emit, checkpoint
        val_loss, val_accuracy = (
            (None, None)
            if val_batches is None
            else _evaluate(model, val_batches, loss_fn, classification)
        )
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            train_accuracy=hits.total() / n_train if classification else None,
            val_accuracy=val_accuracy,
            learning_rate=learning_rate,
            epoch_duration_s=time.perf_counter() - started,
            samples_per_s=n_train / train_seconds if train_seconds > 0 else 0.0,
            grad_norm=0.0 if last_norm is None else float(last_norm),
            timestamp=time.time(),
        )
        sink.on_epoch(record)
        metrics = record.metrics()
        decision = stopper.update(epoch, metrics)
        if decision.improved and keep_best:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # the schedule steps before the checkpoint, so a resumed run trains at the next rate
        step_scheduler(scheduler, val_loss if val_loss is not None else train_loss)
        history.append(metrics)
        if checkpointer is not None:
            checkpointer.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "spec": spec.model_dump_json(),
                    "epoch": epoch,
                    "step": step,
                    "metrics": metrics,
                    "history": history,
                    "rng": capture_random_state(model, batches),
                },
                improved=decision.improved,
            )
        if decision.stop:  # a non-finite monitored value is a failure, not an early stop
            failed = decision.criterion == "check_finite"
            return finish("failed" if failed else "early_stopped", epoch, decision.reason)
    return finish("completed", spec.epochs, None)


@torch.no_grad()
def _evaluate(
    model: nn.Module, batches: Batches, loss_fn: LossFn, classification: bool
) -> tuple[float, float | None]:
    """Mean loss over the validation set (and accuracy for classification), in eval mode."""
    model.eval()
    total = torch.zeros((), device=batches.device)
    hits = HitCounter()
    for x, y in batches:
        out = model(x)
        total += loss_fn(out, y) * len(y)
        if classification:
            hits.add(out, y)
    accuracy = hits.total() / batches.rows if classification else None
    return total.item() / batches.rows, accuracy


def _stopping_spec(spec: TrainingSpec, data: Data) -> EarlyStoppingSpec:
    """The spec's early stopping, or (when off) best-epoch tracking of val_loss or train_loss."""
    stopping = spec.early_stopping
    if stopping is None:
        monitor: MonitorName = "train_loss" if data.val is None else "val_loss"
        return EarlyStoppingSpec(monitor=monitor, patience=None)
    if stopping.monitor.startswith("val_") and data.val is None:
        raise SpecError(
            "early_stopping.monitor",
            f"{stopping.monitor!r} needs validation data, and this dataset has none",
        )
    if stopping.monitor.endswith("accuracy") and data.task == "regression":
        raise SpecError(
            "early_stopping.monitor", f"{stopping.monitor!r} is not measured on a regression task"
        )
    return stopping


def _check_output_shape(model: nn.Module, data: Data, device: torch.device) -> None:
    """One sample through the model, so a mismatched model or target fails before epoch 1."""
    x, y = data.train[0]
    model.eval()
    with torch.no_grad():
        out = model(x.unsqueeze(0).to(device))
    if data.task == "classification":
        if out.dim() != 2 or out.shape[1] <= int(y):
            raise DatasetError(
                "dataset",
                f"a classifier must output (batch, classes) logits, got {tuple(out.shape)} "
                f"for class index {int(y)}",
            )
    elif out.shape[1:] != y.shape:
        raise DatasetError(
            "dataset", f"model output {tuple(out.shape[1:])} does not match target {tuple(y.shape)}"
        )


def _read(losses: list[Tensor], read: list[float]) -> int:
    """Read the batch losses not read yet onto the end of `read` (one device sync); returns the
    index of the first one it added."""
    first = len(read)
    if len(losses) > first:
        read += torch.stack(losses[first:]).tolist()
    return first


def _send_steps(
    sink: MetricSink,
    epoch: int,
    logged: list[tuple[int, int, float]],
    values: list[float],
    fresh: int,
    check_finite: bool,
) -> bool:
    """Send the step records of `logged` (batch index, step, wall time), their losses read from
    `values` (the epoch's batch losses so far), and empty it; with `check_finite`, stop short of
    the first non-finite loss among those from `fresh` on (the ones before were checked), logged
    or not, and return False."""
    first_bad = len(values)
    if check_finite and not all(map(math.isfinite, values[fresh:])):
        first_bad = next(i for i in range(fresh, len(values)) if not math.isfinite(values[i]))
    for batch, step, wall_time in logged:
        if batch >= first_bad:
            break
        sink.on_step(StepRecord(step, epoch, values[batch], wall_time))
    logged.clear()
    return first_bad == len(values)


def _nonfinite(values: list[float], epoch: int, step: int) -> str:
    """Say which batch first gave a non-finite loss; `values` are the epoch's batch losses as read
    so far, `step` is the global step of the last one."""
    first = next(i for i, v in enumerate(values) if not math.isfinite(v))
    at = step - (len(values) - 1 - first)
    return f"train_loss became {values[first]} at epoch {epoch}, step {at} (batch {first + 1})"
