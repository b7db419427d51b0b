"""A plain PyTorch training script that reports to training-mcp with the light client.

Run by hand (`python plain_pytorch.py --epochs 5`, with `training-mcp serve --http` running) it
registers a run of its own; started by the server as an entry point (`start_training(
entry_point="plain_pytorch", params={...})`) the same `training_mcp.init()` attaches to the run
the server created, from the environment. Tiny on purpose: a small MLP on synthetic data, CPU.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import training_mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x = torch.randn(512, 8)
    y = (x[:, :4].sum(dim=1) > 0).long()
    train_x, val_x, train_y, val_y = x[:384], x[384:], y[:384], y[384:]
    model = nn.Sequential(nn.Linear(8, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    url = os.environ.get("TRAINING_MCP_URL", "http://127.0.0.1:8765")
    with training_mcp.init(url=url, name="plain pytorch", config=vars(args)) as run:
        step = 0
        for epoch in range(1, args.epochs + 1):
            model.train()
            for i in range(0, len(train_x), 64):
                optimizer.zero_grad()
                loss = loss_fn(model(train_x[i : i + 64]), train_y[i : i + 64])
                loss.backward()
                optimizer.step()
                step += 1
                run.log(step, {"step/train_loss": loss.item()}, epoch=epoch)
            model.eval()
            with torch.no_grad():
                train_loss = loss_fn(model(train_x), train_y).item()
                logits = model(val_x)
                val_loss = loss_fn(logits, val_y).item()
                val_accuracy = (logits.argmax(dim=1) == val_y).float().mean().item()
            run.log(
                epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                learning_rate=args.lr,
            )
            print(f"epoch {epoch}: train_loss {train_loss:.4f} val_loss {val_loss:.4f}")


if __name__ == "__main__":
    main()
