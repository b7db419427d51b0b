"""The client's side of the checkpoint protocol, on a real folder: what it writes is the index
the server (and the built-in trainer) reads, within the budget, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.retention import read_index
from training_mcp.checkpoints import Checkpoint, CheckpointError, Checkpoints


def test_saved_epochs_are_indexed_in_the_trainers_format_and_kept_within_the_budget(
    tmp_path: Path,
) -> None:
    saved = Checkpoints(tmp_path, budget_bytes=250)
    for epoch in range(1, 7):
        saved.save(epoch, bytes(100), best=epoch == 2)
    index = read_index(tmp_path)  # the server's reader
    # best (2) and last (6) always; then the newest others while they fit 250 bytes: 5 and 4.
    assert (index.epochs, index.best, index.last) == ((2, 4, 5, 6), 2, 6)
    assert sorted(p.name for p in tmp_path.glob("epoch-*.pt")) == [
        f"epoch-{e:06d}.pt" for e in (2, 4, 5, 6)
    ]
    assert dict(index.sizes) == {2: 100, 4: 100, 5: 100, 6: 100}
    assert list(tmp_path.glob(".*.tmp")) == []


def test_a_resumed_run_goes_on_from_its_epoch_and_its_old_future_is_dropped(
    tmp_path: Path,
) -> None:
    first = Checkpoints(tmp_path)
    for epoch in range(1, 6):
        first.save(epoch, f"w{epoch}".encode(), best=epoch == 5)
    env = {"TRAINING_MCP_CHECKPOINT_DIR": str(tmp_path), "TRAINING_MCP_RESUME_EPOCH": "3"}
    again = Checkpoints.from_env(env)
    start = again.resume_from()
    assert start == Checkpoint(3, tmp_path / "epoch-000003.pt")
    assert start.read_bytes() == b"w3"
    again.save(4, b"w4 again")
    index = read_index(tmp_path)
    # Epoch 5 (and the best it was) belonged to the run before the resume.
    assert (index.epochs, index.best, index.last) == ((1, 2, 3, 4), None, 4)
    assert (tmp_path / "epoch-000004.pt").read_bytes() == b"w4 again"
    assert (
        Checkpoints.from_env({"TRAINING_MCP_CHECKPOINT_DIR": str(tmp_path)}).resume_from() is None
    )


def test_a_torch_state_goes_through_torch_save_and_a_writer_writes_its_own_file(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    saved = Checkpoints(tmp_path)
    saved.save(1, {"weight": torch.ones(3)})
    saved.save(2, writer=lambda path: path.write_text("framework's own file"))
    loaded = Checkpoint(1, tmp_path / "epoch-000001.pt").load(weights_only=True)
    assert torch.equal(loaded["weight"], torch.ones(3))
    assert (tmp_path / "epoch-000002.pt").read_text() == "framework's own file"


def test_what_cannot_be_saved_or_resumed_is_refused_saying_why(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="TRAINING_MCP_CHECKPOINT_DIR"):
        Checkpoints(None).save(1, b"x")
    assert Checkpoints(None).resume_from() is None
    saved = Checkpoints(tmp_path)
    with pytest.raises(ValueError, match="epoch: must be an integer >= 1, got 0"):
        saved.save(0, b"x")
    with pytest.raises(ValueError, match="state: give a state or a writer"):
        saved.save(1, b"x", writer=lambda path: None)
    env = {"TRAINING_MCP_CHECKPOINT_DIR": str(tmp_path), "TRAINING_MCP_RESUME_EPOCH": "7"}
    with pytest.raises(CheckpointError, match="no checkpoint of epoch 7"):
        Checkpoints.from_env(env).resume_from()
    with pytest.raises(CheckpointError, match="TRAINING_MCP_RESUME_EPOCH: must be an integer"):
        Checkpoints.from_env({"TRAINING_MCP_RESUME_EPOCH": "last"})
    assert list(tmp_path.iterdir()) == []  # nothing written by what was refused
