"""A Hugging Face `Trainer` script reported by `training_mcp.huggingface.TrainingMCPCallback`.

The model is built from a config (a one-layer BERT with a 64-token vocabulary): nothing is
downloaded. The task is synthetic: is token 7 in the sequence? CPU, seconds.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from training_mcp.huggingface import TrainingMCPCallback


class Sequences(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 12), generator=generator)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    config.num_labels = 2
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=TrainingArguments(
                output_dir=out,
                num_train_epochs=args.epochs,
                learning_rate=args.lr,
                per_device_train_batch_size=32,
                per_device_eval_batch_size=64,
                eval_strategy="epoch",
                logging_steps=1,
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
            ),
            train_dataset=Sequences(192, seed=1),
            eval_dataset=Sequences(64, seed=2),
            callbacks=[TrainingMCPCallback(name="hf tiny bert", config=vars(args))],
        )
        trainer.train()


if __name__ == "__main__":
    main()
