"""A Lightning callback that reports a `Trainer`'s epochs, steps and learning rate to
training-mcp, and ends training at the next step when asked to stop (`stop_training`).

    from training_mcp.lightning import TrainingMCPCallback

    trainer = lightning.Trainer(max_epochs=10, callbacks=[TrainingMCPCallback()])

Needs the `lightning` extra (`pip install "./client[lightning]"`). Every epoch it logs what the
trainer's `callback_metrics` hold (`train_loss`, `val_loss`, ... as the module `self.log`s them)
and the first optimizer's learning rate; every `log_every_n_steps` batches the batch loss as
`step/train_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from training_mcp.callbacks import StopRequest, numbers, open_run
from training_mcp.run import Run

__all__ = ["TrainingMCPCallback"]


class TrainingMCPCallback(pl.Callback):
    def __init__(
        self,
        run: Run | None = None,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        log_every_n_steps: int = 1,
    ) -> None:
        """`run`: report to it; else `training_mcp.init(name=..., config=...)` when training
        starts (attached to the server's run under an entry point)."""
        if log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps: must be >= 0, got {log_every_n_steps}")
        self._given = run
        self._run: Run | None = run
        self._name = name
        self._config = config
        self._every = log_every_n_steps
        self.stop = StopRequest()

    @property
    def run(self) -> Run | None:
        return self._run

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run = open_run(self._given, self._name, self._config)
        self.stop.install()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        step = trainer.global_step
        if self._run is not None and self._every and loss is not None and step % self._every == 0:
            values = numbers({"step/train_loss": loss})
            if values:
                self._run.log(step, values, epoch=trainer.current_epoch + 1)
        if self.stop.is_set() or (self._run is not None and self._run.should_stop):
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._run is None or trainer.sanity_checking:
            return
        values = numbers(dict(trainer.callback_metrics))
        if trainer.optimizers:
            values["learning_rate"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self._run.log(trainer.current_epoch + 1, values)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.uninstall()
        if self._run is not None and self._given is None:
            self._run.finish()
