"""The worker: runs one chunk's cells on a compute node (`python -m hpc.worker MANIFEST`,
`python -m hpc.worker --array DIR --task-id N`, or `hpc.worker.Chunk` through submitit).

The chunk worker (and with it torch) loads on first use of these names, so that login-node
code may import the worker's light modules (`hpc.worker.provenance`) without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc.worker.chunk import Chunk, interruption, main, run_chunk

__all__ = ["Chunk", "interruption", "main", "run_chunk"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hpc.worker import chunk

        return getattr(chunk, name)
    raise AttributeError(f"module 'hpc.worker' has no attribute {name!r}")
