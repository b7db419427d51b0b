"""A Hugging Face `Trainer` callback that reports epochs, steps and learning rate to
training-mcp, and ends training at the next step when asked to stop (`stop_training`).

    from training_mcp.huggingface import TrainingMCPCallback

    trainer = Trainer(..., args=TrainingArguments(eval_strategy="epoch", logging_steps=1, ...),
                      callbacks=[TrainingMCPCallback()])

Needs the `transformers` extra (`pip install "./client[transformers]"`). Each training log
(`logging_steps`) becomes `step/train_loss` and `step/learning_rate` at the global step; each
evaluation an epoch: `eval_loss` as `val_loss`, other `eval_*` as `val_*`, with the epoch's last
training loss as `train_loss` and the learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from training_mcp.callbacks import StopRequest, numbers, open_run
from training_mcp.run import Run

__all__ = ["TrainingMCPCallback"]


class TrainingMCPCallback(TrainerCallback):
    def __init__(
        self,
        run: Run | None = None,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """`run`: report to it; else `training_mcp.init(name=..., config=...)` when training
        starts (attached to the server's run under an entry point)."""
        self._given = run
        self._run: Run | None = run
        self._name = name
        self._config = config
        self._train_loss: float | None = None
        self._lr: float | None = None
        self.stop = StopRequest()

    @property
    def run(self) -> Run | None:
        return self._run

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._run = open_run(self._given, self._name, self._config)
        self.stop.install()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        values = numbers(logs or {})
        if self._run is None or "loss" not in values:
            return
        self._train_loss = values["loss"]
        step_values = {"step/train_loss": values["loss"]}
        if "learning_rate" in values:
            self._lr = values["learning_rate"]
            step_values["step/learning_rate"] = values["learning_rate"]
        self._run.log(state.global_step, step_values, epoch=max(1, math.ceil(state.epoch or 0)))

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if self._run is None:
            return
        values: dict[str, float] = {}
        for name, value in numbers(metrics or {}).items():
            if name == "eval_loss":
                values["val_loss"] = value
            elif name.startswith("eval_") and not name.endswith(("_runtime", "_per_second")):
                values["val_" + name.removeprefix("eval_")] = value
        if self._train_loss is not None:
            values["train_loss"] = self._train_loss
        if self._lr is not None:
            values["learning_rate"] = self._lr
        self._run.log(max(1, round(state.epoch or 0)), values)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self.stop.is_set() or (self._run is not None and self._run.should_stop):
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.stop.uninstall()
        if self._run is not None and self._given is None:
            self._run.finish()
