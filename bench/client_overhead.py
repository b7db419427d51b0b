"""What reporting costs a training loop: the light client and each framework callback, per logged
step, against the same loop without them.

- client: a bare PyTorch loop of tiny steps, then the same loop calling `run.log()` every step;
- lightning: a `Trainer.fit` without callbacks, then with `TrainingMCPCallback` (every step);
- huggingface: a `Trainer.train` without it, then with it (`logging_steps=1`).

The run reports to a server answered in process (`httpx.MockTransport`), so what is measured is
the client's own work (queueing, batching, the sender thread's JSON and HTTP), not a server.
Timed in process CPU seconds (the sender thread included), pairs alternating their order.
Usage: python bench/client_overhead.py [--steps 300] [--pairs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training_mcp import MetricsReporter, Run


def _store_all(request: httpx.Request) -> httpx.Response:
    n = len(json.loads(request.content).get("points", []))
    return httpx.Response(200, json={"received": n, "stored": n, "duplicates": 0})


def _run() -> Run:
    reporter = MetricsReporter(
        "http://bench", "op-bench", transport=httpx.MockTransport(_store_all)
    )
    return Run(reporter, url="http://bench", name="bench", config=None, owned=False)


def _data(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(32, 8, generator=g), torch.randint(0, 2, (32,), generator=g))
        for _ in range(steps)
    ]


def bare_client(steps: int, report: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    run = _run() if report else None
    for step, (x, y) in enumerate(_data(steps), start=1):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if run is not None:
            run.log(step, {"step/train_loss": loss.item()}, epoch=1)
    if run is not None:
        run.finish()


def lightning_fit(steps: int, report: bool) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from training_mcp.lightning import TrainingMCPCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss: torch.Tensor = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(32 * steps, 8)
    y = torch.randint(0, 2, (32 * steps,))
    callbacks: list[pl.Callback] = [TrainingMCPCallback(_run())] if report else []
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(Tiny(), DataLoader(TensorDataset(x, y), batch_size=32))
    for cb in callbacks:
        assert isinstance(cb, TrainingMCPCallback) and cb.run is not None
        cb.run.finish()


def hf_train(steps: int, report: bool) -> None:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    from training_mcp.huggingface import TrainingMCPCallback

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    ids = torch.randint(1, 64, (8 * steps, 12))
    data = [{"input_ids": i, "labels": int(7 in i)} for i in ids]
    callback = TrainingMCPCallback(_run()) if report else None
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=TrainingArguments(
                output_dir=out,
                num_train_epochs=1,
                per_device_train_batch_size=8,
                logging_steps=1,
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
            ),
            train_dataset=data,
            callbacks=[callback] if callback else [],
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
        trainer.train()
    if callback is not None and callback.run is not None:
        callback.run.finish()


def _cpu(fn: Callable[[int, bool], None], steps: int, report: bool) -> float:
    start = time.process_time()
    fn(steps, report)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    print(
        f"| loop ({args.steps} logged steps) | without, ms/step | with, ms/step | overhead, "
        "us/step | ratio |"
    )
    print("|---|---|---|---|---|")
    for label, fn in (
        ("plain PyTorch + run.log", bare_client),
        ("Lightning + callback", lightning_fit),
        ("HF Trainer + callback", hf_train),
    ):
        fn(20, True)  # warm up imports and first-call costs
        without: list[float] = []
        with_: list[float] = []
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for report in order:
                (with_ if report else without).append(_cpu(fn, args.steps, report))
        a, b = statistics.median(without), statistics.median(with_)
        per = 1e6 * (b - a) / args.steps
        print(
            f"| {label} | {1e3 * a / args.steps:.3f} | {1e3 * b / args.steps:.3f} | "
            f"{per:.1f} | {b / a:.3f} |"
        )


if __name__ == "__main__":
    main()
