"""The worker: runs one chunk's cells on a compute node (`python -m hpc.worker MANIFEST`,
`python -m hpc.worker --array DIR --task-id N`, or `hpc.worker.Chunk` through submitit)."""

from hpc.worker.cell import interruption
from hpc.worker.chunk import Chunk, main, run_chunk

__all__ = ["Chunk", "interruption", "main", "run_chunk"]
