"""The cells of a study and their result files: which exist, what they say, read in parallel
and summarised in jobs/results-index.json so that status stays cheap with thousands of cells;
and the one rule of when a cell is finished.

Files are read through analysis.schema.read_cell, the one reader of the format.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from analysis.files import write_json
from analysis.schema import FINAL_STATUSES, CellResult, CorruptResultError, read_cell
from hpc.study.layout import cell_stem, parse_stem
from hpc.study.spec import Study

PARALLEL_READS = 256  # from this many files on, read them in worker processes
# A cell within one dataset: (arch_id, seed), as chunks, manifests and launch records list them.
ArchSeed = tuple[int, int]


@dataclass(frozen=True, order=True)
class Cell:
    """One training: (dataset, architecture id, seed)."""

    dataset: str
    arch_id: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}/{cell_stem(self.arch_id, self.seed)}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        """`fashion_mnist/3-s0` -> Cell('fashion_mnist', 3, 0)."""
        dataset, _, rest = text.partition("/")
        parsed = parse_stem(rest)
        if not dataset or parsed is None:
            raise ValueError(f"cell {text!r} is not DATASET/ARCH-sSEED, e.g. fashion_mnist/3-s0")
        return cls(dataset, *parsed)


@dataclass(frozen=True)
class ResultFile:
    cell: Cell
    path: Path
    mtime: float
    size: int
    inode: int = 0  # every write replaces the file: a new inode even where mtimes are coarse


@dataclass(frozen=True)
class ResultSummary:
    """What planning and status need of a cell's result file, cached by size, mtime and
    inode."""

    status: str  # done, diverged, failed, or corrupt (unreadable: the cell runs again)
    attempts: int
    train_seconds: float
    error: str  # the last line of a failed cell's traceback, or why the file is unreadable
    mtime: float
    size: int
    inode: int = 0


def study_cells(study: Study) -> list[Cell]:
    """Every cell of the study, in dataset order, then architecture id, then seed."""
    n = study.settings.architectures
    return [Cell(d.name, a, s) for d in study.datasets for a in range(n) for s in study.seeds]


class Outcome(Protocol):
    """What the finished rule reads of a result (a ResultSummary or a CellResult)."""

    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...


def is_final(status: str) -> bool:
    """done or diverged: the cell never runs again, whatever its attempts."""
    return status in FINAL_STATUSES


def is_finished(outcome: Outcome | None, max_attempts: int) -> bool:
    """A cell that no launch runs again: final, or failed as often as allowed. An unreadable
    (corrupt) result file, or none, leaves the cell to run."""
    if outcome is None or outcome.status == "corrupt":
        return False
    return is_final(outcome.status) or outcome.attempts >= max_attempts


def result_files(study: Study) -> list[ResultFile]:
    """The result files of the study's datasets (temporary files of writes in flight excluded)."""
    found = []
    for entry in study.datasets:
        folder = study.layout.results_dir(entry.name)
        if not folder.is_dir():
            continue
        with os.scandir(folder) as items:
            for item in items:
                cell = _cell_of(entry.name, item.name)
                if cell is None:
                    continue
                try:
                    stat = item.stat()
                except FileNotFoundError:  # moved away since listed (launch --reset-retries)
                    continue
                found.append(
                    ResultFile(cell, Path(item.path), stat.st_mtime, stat.st_size, stat.st_ino)
                )
    return sorted(found, key=lambda f: f.cell)


def _cell_of(dataset: str, filename: str) -> Cell | None:
    if not filename.endswith(".h5") or filename.startswith("."):
        return None
    parsed = parse_stem(filename[:-3])
    return None if parsed is None else Cell(dataset, *parsed)


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


def _summary(found: ResultFile, result: CellResult | CorruptResultError) -> ResultSummary:
    if isinstance(result, CorruptResultError):
        return ResultSummary(
            "corrupt", 0, float("nan"), str(result), found.mtime, found.size, found.inode
        )
    lines = result.error.strip().splitlines()
    return ResultSummary(
        result.status,
        result.attempts,
        result.train_seconds,
        lines[-1] if lines else "",
        found.mtime,
        found.size,
        found.inode,
    )


def write_index(study: Study, summaries: dict[Cell, ResultSummary]) -> None:
    """Remember what each file says, keyed by its size, mtime and inode."""
    data = {f"{c.key}.h5": asdict(s) for c, s in sorted(summaries.items())}
    with contextlib.suppress(OSError):  # a read-only study folder still gets its status
        write_json(study.layout.results_index, data)


def scan_results(study: Study) -> dict[Cell, ResultSummary]:
    """Every result file of the study's datasets, summarised. Files unchanged since the last
    scan come from jobs/results-index.json, so a scan of thousands of cells costs a stat each."""
    try:
        index = json.loads(study.layout.results_index.read_text())
    except (OSError, ValueError):
        index = {}
    out: dict[Cell, ResultSummary] = {}
    changed: list[ResultFile] = []
    for found in result_files(study):
        cached = index.get(f"{found.cell.key}.h5")
        if cached and (cached["mtime"], cached["size"], cached.get("inode")) == (
            found.mtime,
            found.size,
            found.inode,
        ):
            out[found.cell] = ResultSummary(**cached)
        else:
            changed.append(found)
    transient = set()
    for found, result in zip(changed, read_cell_files([f.path for f in changed]), strict=True):
        out[found.cell] = _summary(found, result)
        if isinstance(result, UnreadableNowError):
            transient.add(found.cell)
    if changed or len(out) != len(index):
        write_index(study, {c: s for c, s in out.items() if c not in transient})
    return out
