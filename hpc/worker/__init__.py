"""The worker: runs one chunk's cells on a compute node (`python -m hpc.worker MANIFEST`,
`python -m hpc.worker --array DIR --task-id N`, or `hpc.worker.Chunk` through submitit).

Its names are imported on first use: a task's entry point must catch SIGUSR2 (see
`hpc.worker.preempt`) before torch is imported, and importing this package comes first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc.worker.cell import interruption
    from hpc.worker.chunk import Chunk, main, run_chunk

__all__ = ["Chunk", "interruption", "main", "run_chunk"]
_HOMES = {
    "Chunk": "hpc.worker.chunk",
    "main": "hpc.worker.chunk",
    "run_chunk": "hpc.worker.chunk",
    "interruption": "hpc.worker.cell",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'hpc.worker' has no attribute {name!r}")
