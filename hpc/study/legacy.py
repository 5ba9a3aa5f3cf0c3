"""One-cell result files (`results/<dataset>/<arch_id>-s<seed>.h5`), as studies from before
packs hold them: read into the results index beside packs, fingerprinted from the recipe
they recorded and the spec and architecture their task's manifest recorded (no retraining),
and moved into a pack by `anysweep clean` (one file fewer per cell).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.schema import STATUSES, CellResult, CorruptResultError, read_cell
from hpc.study.fingerprint import arch_digest, config_digest, recorded_config
from hpc.study.layout import legacy_cell
from hpc.study.spec import Study

if TYPE_CHECKING:
    from hpc.study.index import FileState, _Builder

PARALLEL_READS = 256  # from this many files on, read them in worker processes


class UnreadableNowError(CorruptResultError):
    """A result file the system would not let us read (a lock, permissions, an I/O error):
    reported like a corrupt one, but never remembered, since it may read next time."""


def _read(path: Path) -> CellResult | CorruptResultError:
    try:
        return read_cell(path)
    except CorruptResultError as exc:
        return exc
    except FileNotFoundError as exc:  # replaced or moved away since it was listed
        return UnreadableNowError(f"{path}: gone while reading ({exc})")
    except OSError as exc:
        return UnreadableNowError(f"{path}: cannot be read now ({exc})")


def read_cell_files(
    paths: Sequence[Path], progress: bool = False
) -> list[CellResult | CorruptResultError]:
    """Each file's CellResult, or the error that says why it cannot be read; many files are
    read by one process per core (h5py holds a lock, so threads would not help)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    def shown(results: Iterator[CellResult | CorruptResultError]) -> list:
        bar = tqdm(
            results, total=len(paths), desc="reading results", unit="cell", disable=not progress
        )
        return list(bar)

    workers = min(os.cpu_count() or 1, 16)
    if len(paths) < PARALLEL_READS or workers < 2:
        return shown(map(_read, paths))
    with ProcessPoolExecutor(workers) as pool:
        return shown(pool.map(_read, paths, chunksize=64))


@dataclass(frozen=True)
class Trained:
    """What a task's manifest recorded of a cell: the dataset's spec and the architecture."""

    spec: dict[str, Any]
    arch: dict[str, Any] | None


def recorded_training(study: Study) -> dict[tuple[str, int, int], Trained]:
    """(dataset, arch id, seed) -> what the latest manifest that listed the cell recorded."""
    out: dict[tuple[str, int, int], Trained] = {}
    paths = study.layout.task_manifests()
    for path in sorted(paths, key=_mtime):
        try:
            data = json.loads(path.read_text())
            spec = dict(data["dataset"])
            for cell in data["cells"]:
                key = (str(spec["name"]), int(cell["arch_id"]), int(cell["seed"]))
                out[key] = Trained(spec, dict(cell["arch"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _collected_specs(study: Study) -> dict[str, dict[str, Any]]:
    """The dataset specs results.h5 recorded when it was collected (before a change)."""
    from analysis.schema import read_results

    try:
        results = read_results(study.layout.results_file)
    except (OSError, ValueError):
        return {}
    return {name: json.loads(t.info.spec or "{}") for name, t in results.datasets.items()}


def index_legacy(
    study: Study, builder: _Builder, states: Sequence[FileState], progress: bool
) -> None:
    """Add one-cell result files to the index being built: one record each (a corrupt file
    is listed as such; one the system will not let us read now is left for next time)."""
    root = study.layout.root
    read = read_cell_files([root / s.path for s in states], progress)
    recorded = recorded_training(study) if states else {}
    collected: dict[str, dict[str, Any]] | None = None
    for state, result in zip(states, read, strict=True):
        if isinstance(result, UnreadableNowError):
            continue
        row = builder.add_pack(state, state.size)
        if isinstance(result, CorruptResultError):
            builder.index.corrupt.append((state.path, 0, str(result)))
            continue
        cell = legacy_cell(Path(state.path))
        if cell is None or result.key != (state.dataset, *cell):
            builder.index.corrupt.append((state.path, 0, f"the file holds cell {result.key}"))
            continue
        trained = recorded.get(result.key)
        if trained is None:
            collected = _collected_specs(study) if collected is None else collected
            spec = collected.get(state.dataset) or study.dataset(state.dataset).spec.to_dict()
            trained = Trained(spec, None)
        builder.add_records(_record(builder, state, row, result, trained))


def _record(
    builder: _Builder, state: FileState, row: int, result: CellResult, trained: Trained
) -> dict[str, Any]:
    from hpc.study.index import last_line

    recipe = json.loads(result.recipe) if result.recipe else None  # none recorded: not compared
    config = config_digest(trained.spec, recipe).hex()
    code = builder.code("configs", config)
    if code == len(builder.index.config_texts):
        builder.index.config_texts.append(recorded_config(trained.spec, recipe))
    arch = builder.code("archs", arch_digest(trained.arch).hex()) if trained.arch else -1
    failed = result.status == "failed"
    return {
        "pack": [row],
        "dataset": [builder.code("datasets", state.dataset)],
        "offset": [0],
        "length": [0],
        # A file replaced by another is another record: its stat names it.
        "crc": [zlib.crc32(f"{state.inode}:{state.size}:{state.mtime}".encode())],
        "written": [state.mtime / 1e9],
        "arch_id": [result.arch_id],
        "seed": [result.seed],
        "status": [STATUSES.index(result.status)],
        "attempts": [min(result.attempts, 0x7FFF)],
        "train_seconds": [result.train_seconds],
        "config": [code],
        "arch": [arch],
        "error": [builder.code("errors", last_line(result.error)) if failed else -1],
    }
