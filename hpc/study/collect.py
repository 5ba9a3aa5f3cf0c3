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

from analysis.schema import CellResult, DatasetInfo, read_root_attr, write_results
from hpc.scheduling.plan import dataset_sizes
from hpc.study.population import Population, load_population, study_lock
from hpc.study.results import (
    ResultFile,
    UnreadableNowError,
    read_results,
    result_files,
    scan_results,
)
from hpc.study.spec import DatasetEntry, Study

RESULTS_FILE = "results.h5"
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


def dataset_info(study: Study, entry: DatasetEntry) -> DatasetInfo:
    """What results.h5 records of a dataset: from its prepared files when they are there,
    else from the registry."""
    from loaders.prepare import open_prepared

    spec = entry.spec
    try:
        prepared = open_prepared(spec, study.data_dir)
        classes, names = prepared.num_classes, tuple(prepared.class_names)
        num_train, num_test = prepared.num_train, prepared.num_test
        subset = tuple(prepared.selection.classes) if prepared.selection is not None else ()
    except (FileNotFoundError, ValueError):
        num_train, num_test, classes, _ = dataset_sizes(entry)
        names, subset = tuple(spec.label_names or ()), ()
    return DatasetInfo(
        name=entry.name,
        classes=classes,
        resolution=entry.resolution,
        num_train=num_train,
        num_test=num_test,
        source=spec.source,
        class_names=names,
        recipe=entry.recipe.to_json(),
        parent=spec.parent or "",
        subset_classes=subset,
        spec=json.dumps(spec.to_dict(), sort_keys=True),
    )


def _prepared_owner(entry: DatasetEntry) -> Any:
    """The spec whose prepared files a dataset reads: a subset reads its parent's."""
    return entry.spec.parent_spec() if entry.spec.is_subset else entry.spec


def _fingerprint(study: Study, files: list[ResultFile]) -> str:
    """Changes when any input of results.h5 changes: result files, architectures, study.toml
    and the prepared datasets' manifests (where /datasets takes its sizes and classes)."""
    from loaders.prepare import manifest_path

    digest = hashlib.sha256(study.source.encode())
    stat = (study.root / "architectures.json").stat()
    digest.update(f"architectures.json:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for entry in study.datasets:
        manifest = manifest_path(_prepared_owner(entry), study.data_dir)
        try:
            stat = manifest.stat()
            digest.update(f"{manifest.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
        except FileNotFoundError:
            digest.update(f"{manifest.name}:absent".encode())
    for found in files:
        digest.update(f"{found.cell.key}:{found.mtime}:{found.size}:{found.inode}".encode())
    return digest.hexdigest()


def _current_fingerprint(path: Path) -> str:
    return read_root_attr(path, "inputs")


def collect(study: Study, *, progress: bool = False) -> Collected:
    """Merge every readable result file of the study's cells into STUDY/results.h5."""
    from hpc.worker.provenance import now

    population = load_population(study)
    target = study.root / RESULTS_FILE
    n_archs, seeds = study.settings.architectures, study.settings.seeds
    with study_lock(study, "collect"):
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
            files, read_results([f.path for f in files], progress), strict=True
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
            datasets=[dataset_info(study, entry) for entry in study.datasets],
            cells=cells,
            attrs=attrs,
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


def clean(study: Study, *, betons: bool = False) -> tuple[list[Path], int]:
    """Delete checkpoints of finished cells and, with `betons`, the prepared files of
    datasets whose cells (and whose subsets' cells) all finished. Returns (files, bytes)."""
    from hpc.study.results import is_finished, study_cells

    results = scan_results(study)
    attempts = study.settings.max_attempts
    removed: list[Path] = []
    for cell, summary in results.items():
        if is_finished(summary, attempts) and summary.status != "failed":
            path = study.root / "checkpoints" / cell.dataset / f"{cell.arch_id}-s{cell.seed}.pt"
            if path.exists():
                removed.append(path)
    if betons:
        unfinished = {
            c.dataset for c in study_cells(study) if not is_finished(results.get(c), attempts)
        }
        removed.extend(_prepared_files(study, unfinished))
    freed = 0
    for path in removed:
        freed += path.stat().st_size
        path.unlink()
    return removed, freed


def _prepared_files(study: Study, unfinished: set[str]) -> list[Path]:
    """Prepared files no unfinished cell reads: a parent's serve its subsets too."""
    from loaders.files import sidecar
    from loaders.prepare import manifest_path

    owners: dict[str, list[DatasetEntry]] = {}
    for entry in study.datasets:
        owners.setdefault(_prepared_owner(entry).name, []).append(entry)
    files: list[Path] = []
    for users in owners.values():
        if any(u.name in unfinished for u in users):
            continue
        manifest = manifest_path(_prepared_owner(users[0]), study.data_dir)
        try:
            listed = json.loads(manifest.read_text()).get("files", {})
        except (OSError, ValueError):
            continue
        for name in listed.values():
            data = study.data_dir / name
            files.extend(p for p in (data, sidecar(data)) if p.exists())
        files.append(manifest)
    return files
