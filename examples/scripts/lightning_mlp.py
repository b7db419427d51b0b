"""A Lightning script reported by `training_mcp.lightning.TrainingMCPCallback`: epochs, steps
and learning rate go to training-mcp, and a stop request ends training at the next step.
Tiny: an MLP on synthetic data, CPU, no logger or checkpoint files."""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from training_mcp.lightning import TrainingMCPCallback


class MLP(pl.LightningModule):
    def __init__(self, lr: float, hidden: int) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.loss = nn.CrossEntropyLoss()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", self.loss(logits, y))
        self.log("val_accuracy", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(512, 8)
    y = (x[:, :4].sum(dim=1) > 0).long()
    train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[384:], y[384:]), batch_size=128)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[TrainingMCPCallback(name="lightning mlp", config=vars(args))],
    )
    trainer.fit(MLP(args.lr, args.hidden), train, val)


if __name__ == "__main__":
    main()
