"""A training script that knows nothing of training-mcp: it only writes TensorBoard scalars.

Declared with `tensorboard_logdir`, its scalars are read from that folder by the server (with
TensorBoard's own event reader) and stored like every pushed point: zero code change for a
script that already logs to TensorBoard. Tiny: a linear regression on synthetic data, CPU.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256)
    train_x, val_x, train_y, val_y = x[:192], x[192:], y[:192], y[192:]
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()
    writer = SummaryWriter(args.logdir)
    for epoch in range(1, args.epochs + 1):
        optimizer.zero_grad()
        loss = loss_fn(model(train_x).squeeze(1), train_y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            val_loss = loss_fn(model(val_x).squeeze(1), val_y).item()
        writer.add_scalar("train_loss", loss.item(), epoch)
        writer.add_scalar("val_loss", val_loss, epoch)
        writer.flush()
        print(f"epoch {epoch}: val_loss {val_loss:.4f}")
    writer.close()


if __name__ == "__main__":
    main()
