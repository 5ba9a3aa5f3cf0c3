"""The worker: runs one chunk's cells on a compute node (`python -m hpc.worker MANIFEST`,
`python -m hpc.worker --array DIR --task-id N`, or `hpc.worker.Chunk` through submitit).

The chunk worker (and with it torch) loads on first use of these names, so that login-node
code may import the worker's light modules (`hpc.worker.provenance`) without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc.worker.cell import interruption
    from hpc.worker.chunk import Chunk, main, run_chunk

# name -> the module of this package that defines it
_PUBLIC = {"Chunk": "chunk", "main": "chunk", "run_chunk": "chunk", "interruption": "cell"}
__all__ = ["Chunk", "interruption", "main", "run_chunk"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"hpc.worker.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'hpc.worker' has no attribute {name!r}")
