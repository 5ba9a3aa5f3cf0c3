"""Epoch-end checkpoints: atomic writes, safe reads, random generators restored exactly."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from hpc.worker.checkpoint import (
    CorruptCheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _payload(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "model": {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) * epoch},
        "history": {"train_loss": [2.5, 1.25][:epoch]},
    }


def test_saved_checkpoint_loads_back_equal(tmp_path):
    path = tmp_path / "c" / "0-s0.pt"
    save_checkpoint(path, _payload(2))
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["model"]["weight"], torch.tensor([[0.0, 2, 4], [6, 8, 10]]))
    assert loaded["history"] == {"train_loss": [2.5, 1.25]}


def test_missing_checkpoint_loads_as_none(tmp_path):
    assert load_checkpoint(tmp_path / "absent.pt") is None


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "0-s0.pt"
    save_checkpoint(path, _payload(1))
    with pytest.raises((AttributeError, pickle.PicklingError)):  # a lambda cannot be pickled
        save_checkpoint(path, {"epoch": 2, "model": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-s0.pt"]


def test_truncated_checkpoint_raises_corrupt_checkpoint_error(tmp_path):
    path = tmp_path / "0-s0.pt"
    save_checkpoint(path, _payload(1))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_file_without_an_epoch_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CorruptCheckpointError, match="not a checkpoint written by anysweep"):
        load_checkpoint(path)


def test_restored_generators_repeat_the_same_draws(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"epoch": 0, "rng": rng_state()})
    first = (torch.rand(4), random.random(), np.random.rand(3))
    set_rng_state(load_checkpoint(path)["rng"])
    second = (torch.rand(4), random.random(), np.random.rand(3))
    assert torch.equal(first[0], second[0])
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])
