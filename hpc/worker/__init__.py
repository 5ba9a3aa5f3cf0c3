"""The worker: runs one chunk's cells on a compute node (`python -m hpc.worker MANIFEST`,
`python -m hpc.worker --array DIR --task-id N`, or `hpc.worker.Chunk` through submitit)."""

from hpc.worker.chunk import (
    CellPaths,
    Chunk,
    cell_paths,
    interruption,
    main,
    read_manifest,
    run_chunk,
    write_manifest,
)

__all__ = [
    "CellPaths",
    "Chunk",
    "cell_paths",
    "interruption",
    "main",
    "read_manifest",
    "run_chunk",
    "write_manifest",
]
