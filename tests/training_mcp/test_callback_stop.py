"""The framework callbacks honour the server's stop request (`Run.should_stop`, read from the
answers to pushes) at the next step, with no signal involved; real Lightning and Transformers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from training_mcp import MetricsReporter, Run


def _run_told_to_stop() -> Run:
    """A run whose server answers every push with a stop request."""

    def answer(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["points"])
        body = {"received": n, "stored": n, "duplicates": 0, "stop_requested": "enough"}
        return httpx.Response(200, json=body)

    reporter = MetricsReporter("http://server.test", "op-1", transport=httpx.MockTransport(answer))
    return Run(reporter, url="http://server.test", name=None, config=None, owned=False)


# Lightning's own use of torch's pytree, not ours.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_a_lightning_fit_ends_at_a_step_once_the_server_asks() -> None:
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from training_mcp.lightning import TrainingMCPCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss: torch.Tensor = nn.functional.mse_loss(self.net(x), y)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    run = _run_told_to_stop()
    trainer = pl.Trainer(
        max_epochs=1000,  # 8000 steps unless the request ends it
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[TrainingMCPCallback(run)],
    )
    trainer.fit(Tiny(), data)
    assert run.should_stop and run.stop_reason == "enough"
    assert trainer.global_step < 8000 // 4, trainer.global_step
    run.finish()


def test_a_hugging_face_trainer_is_told_to_stop_at_the_step_end(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from training_mcp.huggingface import TrainingMCPCallback

    run = _run_told_to_stop()
    callback = TrainingMCPCallback(run)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    control = TrainerControl()
    callback.on_step_end(args, TrainerState(), control)
    assert not control.should_training_stop  # nothing pushed yet, so nothing heard
    callback.on_log(args, TrainerState(global_step=1, epoch=0.1), control, logs={"loss": 0.5})
    run.reporter.flush()  # the answer to that push carries the request
    callback.on_step_end(args, TrainerState(), control)
    assert control.should_training_stop
    run.finish()
