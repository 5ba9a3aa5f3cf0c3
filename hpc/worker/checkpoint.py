"""Epoch-end checkpoints: written atomically, read back with only tensors and plain values.

A checkpoint is a dict (model, optimizer, scheduler, RNG states, epoch, the curves so far);
`hpc.worker.train` decides its content, this module makes writing it crash-safe.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.files import atomic_file, temporaries


class CorruptCheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read back."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` so that a reader sees the old file or the whole new one.

    A crash or a signal in the middle leaves at most a hidden temporary file, removed here
    when Python still runs; one left by a SIGKILL is removed by the cell's next save.
    """
    remove_temporaries(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)


def remove_temporaries(path: Path) -> None:
    """Remove what killed writes of this checkpoint left beside it (one cell has one writer)."""
    for leftover in temporaries(path):
        leftover.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        # weights_only: a checkpoint holds tensors and plain values, never code to run.
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "epoch" not in payload:
        raise CorruptCheckpointError(f"{path}: not a checkpoint written by anysweep")
    return payload


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from, in a form torch.load accepts."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # legacy=True: (kind, keys, pos, has_gauss, gauss)
    kind, keys, pos, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by `rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_tuples(state["python"]))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _tuples(value: Any) -> Any:
    # random.setstate insists on tuples; a round trip may hand lists back.
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value
