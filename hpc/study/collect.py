"""`anysweep collect`: merge the cells' result files into results.h5 through analysis.schema.

One writer at a time (a lock), atomic replacement, and idempotent: unchanged inputs leave
results.h5 untouched. A corrupt or half-written result file is reported and never merged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.schema import CellResult, read_root_attr, write_results
from hpc.study.datasets import prepared_manifest, results_info
from hpc.study.layout import study_lock
from hpc.study.population import Population, load_population
from hpc.study.results import (
    ResultFile,
    UnreadableNowError,
    read_cell_files,
    result_files,
    scan_results,
)
from hpc.study.scores import files_stamp, score_tables
from hpc.study.spec import Study

REFERENCE_RESOLUTION = 224  # the /architectures complexity columns are counted here
REFERENCE_CLASSES = 1000


@dataclass(frozen=True)
class Collected:
    """What a collect did."""

    path: Path
    cells: int  # cells in results.h5
    skipped: tuple[str, ...]  # "cell: why" for result files not merged
    written: bool  # False: results.h5 was up to date


def architecture_columns(population: Population) -> dict[str, np.ndarray]:
    """/architectures: one row per id; per-stage columns padded with 0 to the deepest network."""
    from anynet.complexity import complexity

    archs, sampled = population.archs, population.sampled
    stages = max((a.num_stages for a in archs), default=0)

    def per_stage(values: list[tuple], dtype: Any) -> np.ndarray:
        out = np.zeros((len(values), stages), dtype=dtype)
        for i, row in enumerate(values):
            out[i, : len(row)] = row
        return out

    counts = [
        complexity(a, resolution=REFERENCE_RESOLUTION, num_classes=REFERENCE_CLASSES) for a in archs
    ]
    return {
        "id": np.arange(len(archs), dtype=np.int64),
        "name": np.array([a.name for a in archs], dtype=object),
        "num_stages": np.array([a.num_stages for a in archs], dtype=np.int64),
        "depths": per_stage([a.depths for a in archs], np.int64),
        "widths": per_stage([a.widths for a in archs], np.int64),
        "bottleneck_ratios": per_stage([a.bottleneck_ratios for a in archs], np.float64),
        "group_widths": per_stage([a.group_widths for a in archs], np.int64),
        "sampled_widths": per_stage([s.widths for s in sampled], np.int64),
        "sampled_group_widths": per_stage([s.group_widths for s in sampled], np.int64),
        "stem": np.array([a.stem for a in archs], dtype=object),
        "stem_width": np.array([a.stem_width for a in archs], dtype=np.int64),
        "se_ratio": np.array([a.se_ratio for a in archs], dtype=np.float64),
        "flops": np.array([c.flops for c in counts], dtype=np.int64),
        "params": np.array([c.params for c in counts], dtype=np.int64),
        "acts": np.array([c.acts for c in counts], dtype=np.int64),
    }


def _fingerprint(study: Study, files: list[ResultFile]) -> str:
    """Changes when any input of results.h5 changes: result files, architectures, study.toml,
    the prepared datasets' manifests (where /datasets takes its sizes and classes) and the
    score files."""
    digest = hashlib.sha256(study.source.encode())
    architectures = study.layout.architectures
    stat = architectures.stat()
    digest.update(f"{architectures.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for entry in study.datasets:
        manifest = prepared_manifest(study, entry)
        try:
            stat = manifest.stat()
            digest.update(f"{manifest.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
        except FileNotFoundError:
            digest.update(f"{manifest.name}:absent".encode())
    for found in files:
        digest.update(f"{found.cell.key}:{found.mtime}:{found.size}:{found.inode}".encode())
    digest.update(files_stamp(study).encode())
    return digest.hexdigest()


def _current_fingerprint(path: Path) -> str:
    return read_root_attr(path, "inputs")


def collect(study: Study, *, progress: bool = False) -> Collected:
    """Merge every readable result file of the study's cells into STUDY/results.h5."""
    from hpc.provenance import now

    population = load_population(study)
    target = study.layout.results_file
    n_archs, seeds = study.settings.architectures, study.settings.seeds
    with study_lock(study.layout, "collect"):
        files = [f for f in result_files(study) if f.cell.arch_id < n_archs and f.cell.seed < seeds]
        fingerprint = _fingerprint(study, files)
        if target.exists() and _current_fingerprint(target) == fingerprint:
            summaries = scan_results(study)
            skipped = tuple(
                f"{f.cell.key}: {summaries[f.cell].error}"
                for f in files
                if summaries[f.cell].status == "corrupt"
            )
            return Collected(target, len(files) - len(skipped), skipped, False)
        cells: list[CellResult] = []
        skipped_cells: list[str] = []
        unread = False
        for found, result in zip(
            files, read_cell_files([f.path for f in files], progress), strict=True
        ):
            cell = found.cell
            unread = unread or isinstance(result, UnreadableNowError)
            if not isinstance(result, CellResult):
                skipped_cells.append(f"{cell.key}: {result}")
            elif result.key != (cell.dataset, cell.arch_id, cell.seed):
                skipped_cells.append(f"{cell.key}: the file holds cell {result.key}")
            else:
                cells.append(result)
        attrs = {
            "created": now(),
            "study": study.name,
            "reference": study.reference,
            "software": _software(),
            "study_toml": study.source,
            # A file the system would not let us read now: the next collect reads it again.
            "inputs": f"{fingerprint}+unread" if unread else fingerprint,
        }
        write_results(
            target,
            architectures=architecture_columns(population),
            datasets=[results_info(study, entry) for entry in study.datasets],
            cells=cells,
            attrs=attrs,
            scores=score_tables(study),
        )
    return Collected(target, len(cells), tuple(skipped_cells), True)


def _software() -> str:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ("anysweep", "numpy", "h5py"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = ""
    return json.dumps(out, sort_keys=True)
