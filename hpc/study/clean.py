"""`anysweep clean`: free the disk and the files that finished cells no longer need:
checkpoints and log files of finished cells (their log is in their record), temporaries
that writers killed mid-write left behind, one-cell result files of a study from before
packs (moved into a pack, log included) and, asked for, prepared datasets no unfinished
cell reads.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from analysis.files import stale_temporaries
from hpc.study import packs
from hpc.study.datasets import prepared_files
from hpc.study.index import UNKNOWN_DIGEST, ResultsIndex
from hpc.study.layout import StudyLayout, parse_stem, study_lock
from hpc.study.results import Standing, standing
from hpc.study.spec import Study

# A temporary untouched this long belongs to no write in flight (a checkpoint is written in
# seconds; launches and collects hold the locks clean takes).
TEMPORARY_AGE_S = 3600.0
LEGACY_PACK = "legacy"  # results/<dataset>/legacy.pack: one-cell files moved in by clean


def clean(study: Study, *, betons: bool = False) -> tuple[list[Path], int]:
    """Delete what finished cells no longer need (see the module's docstring) and, with
    `betons`, the prepared files of datasets whose cells (and whose subsets' cells) all
    finished. Returns (files removed, bytes freed)."""
    layout = study.layout
    with study_lock(layout, "launch"), study_lock(layout, "collect"):
        now = standing(study)
        moved = migrate_legacy(study, now)
        removed = _finished_files(study, now) + _temporaries(layout)
        if betons:
            finished = now.outcomes.finished(study.settings.max_attempts)
            d, _, _ = now.outcomes.grid.parts(np.flatnonzero(~finished))
            unfinished = {now.outcomes.grid.datasets[i] for i in set(d.tolist())}
            removed.extend(prepared_files(study, unfinished))
        freed = 0
        for path in removed:
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
    return moved + removed, freed


def _finished_files(study: Study, now: Standing) -> list[Path]:
    """Checkpoints and leftover log files of cells whose counting record is final (the
    folders are listed, not every cell's paths tried)."""
    out = now.outcomes
    final = out.final()
    found = []
    for i, dataset in enumerate(out.grid.datasets):
        cells = study.layout.cell(dataset, 0, 0)
        for folder in (cells.checkpoint.parent, cells.log.parent):
            with contextlib.suppress(FileNotFoundError), os.scandir(folder) as items:
                for item in items:
                    parsed = parse_stem(item.name.rpartition(".")[0])
                    if parsed is None or item.name.startswith("."):
                        continue
                    position = out.grid.index([i], [parsed[0]], [parsed[1]])[0]
                    if position >= 0 and final[position]:
                        found.append(Path(item.path))
    return found


def _temporaries(layout: StudyLayout) -> list[Path]:
    """Hidden temporaries of atomic writes (`.<name>.<random>.tmp`) old enough to be
    leftovers of a writer that was killed."""
    found = stale_temporaries(layout.root, TEMPORARY_AGE_S, recursive=False)
    for folder in layout.written_folders():
        found += stale_temporaries(folder, TEMPORARY_AGE_S)
    return found


def migrate_legacy(study: Study, now: Standing) -> list[Path]:
    """Move the final one-cell result files into results/<dataset>/legacy.pack (their log
    file folded in), each record stamped with the file's time, then delete the files. A
    file whose record is there already (an earlier clean stopped before deleting) is only
    deleted. Returns the files removed."""
    index, layout = now.index, study.layout
    records = index.records
    legacy = index.pack["legacy"][records["pack"]] if len(index) else np.zeros(0, dtype=bool)
    out = now.outcomes
    counting = set(out.row[out.final()].tolist())
    rows = [r for r in np.flatnonzero(legacy).tolist() if r in counting]
    removed: list[Path] = []
    by_dataset: dict[str, list[int]] = {}
    for row in rows:
        by_dataset.setdefault(index.datasets[int(records["dataset"][row])], []).append(row)
    for dataset, mine in by_dataset.items():
        mine.sort(key=lambda r: (int(records["arch_id"][r]), int(records["seed"][r])))
        target = layout.pack(dataset, LEGACY_PACK)
        there = {(r.result.arch_id, r.result.seed, r.written) for r in packs.stored(target)}
        entries, files = [], []
        for row in mine:
            path = layout.root / index.pack_paths[int(records["pack"][row])]
            entry = _entry(layout, index, row, path)
            if entry is None:
                continue
            key = (entry.result.arch_id, entry.result.seed, entry.written)
            if key not in there:
                entries.append(entry)
            files.append(path)
        if entries:
            packs.append(target, entries)
        for path in files:
            log = layout.cell(dataset, *_cell_of(path)).log
            for done in (path, log):
                if done.exists():
                    done.unlink()
                    removed.append(done)
    return removed


def _cell_of(path: Path) -> tuple[int, int]:
    from hpc.study.layout import legacy_cell

    found = legacy_cell(path)
    assert found is not None  # the index lists only files with a cell's name
    return found


def _entry(layout: StudyLayout, index: ResultsIndex, row: int, path: Path) -> packs.Entry | None:
    from analysis.schema import CorruptResultError, read_cell

    records = index.records
    try:
        result = read_cell(path)
    except (CorruptResultError, OSError):
        return None
    log_file = layout.cell(result.dataset, result.arch_id, result.seed).log
    log = log_file.read_text(errors="replace") if log_file.exists() else ""
    arch = int(records["arch"][row])
    return packs.Entry(
        result,
        log,
        bytes.fromhex(index.configs[int(records["config"][row])]),
        bytes.fromhex(index.archs[arch]) if arch >= 0 else UNKNOWN_DIGEST,
        written=float(records["written"][row]),
    )
