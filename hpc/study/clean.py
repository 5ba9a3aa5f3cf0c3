"""`anysweep clean`: free the disk that finished cells no longer need."""

from __future__ import annotations

from pathlib import Path

from hpc.study.datasets import prepared_files
from hpc.study.results import is_final, is_finished, scan_results, study_cells
from hpc.study.spec import Study


def clean(study: Study, *, betons: bool = False) -> tuple[list[Path], int]:
    """Delete checkpoints of finished cells and, with `betons`, the prepared files of
    datasets whose cells (and whose subsets' cells) all finished. Returns (files, bytes)."""
    results = scan_results(study)
    attempts = study.settings.max_attempts
    removed: list[Path] = []
    for cell, summary in results.items():
        if is_final(summary.status):
            path = study.layout.cell(cell.dataset, cell.arch_id, cell.seed).checkpoint
            if path.exists():
                removed.append(path)
    if betons:
        unfinished = {
            c.dataset for c in study_cells(study) if not is_finished(results.get(c), attempts)
        }
        removed.extend(prepared_files(study, unfinished))
    freed = 0
    for path in removed:
        freed += path.stat().st_size
        path.unlink()
    return removed, freed
