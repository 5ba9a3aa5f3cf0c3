"""`anysweep clean`: free the disk that finished cells no longer need, and what killed writes
left behind."""

from __future__ import annotations

from pathlib import Path

from analysis.files import stale_temporaries
from hpc.study.datasets import prepared_files
from hpc.study.results import is_final, is_finished, scan_results, study_cells
from hpc.study.spec import Study

# A temporary file not written to for this long has no writer left: a running worker's
# checkpoint or result is written in seconds.
STALE_TEMPORARY_S = 3600.0


def clean(study: Study, *, betons: bool = False) -> tuple[list[Path], int]:
    """Delete checkpoints of finished cells, temporary files that killed writes left in the
    study folder (untouched for an hour), and, with `betons`, the prepared files of datasets
    whose cells (and whose subsets' cells) all finished. Returns (files, bytes)."""
    results = scan_results(study)
    attempts = study.settings.max_attempts
    removed: list[Path] = []
    for cell, summary in results.items():
        if is_final(summary.status):
            path = study.layout.cell(cell.dataset, cell.arch_id, cell.seed).checkpoint
            if path.exists():
                removed.append(path)
    for folder in study.layout.written_folders():
        removed.extend(stale_temporaries(folder, STALE_TEMPORARY_S))
    if betons:
        unfinished = {
            c.dataset for c in study_cells(study) if not is_finished(results.get(c), attempts)
        }
        removed.extend(prepared_files(study, unfinished))
    freed = 0
    gone = []
    for path in removed:
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # a temporary renamed or removed since it was listed
            gone.append(path)
    return [p for p in removed if p not in gone], freed
