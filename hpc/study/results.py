"""The cells of a study and what their results say: the one rule of when a cell is finished,
the one rule of which of a cell's records counts, and both over the whole study at once.

A study's cells form a grid, datasets x architectures x seeds (`Grid`), so that a study of
600,000 cells is a few arrays, not 600,000 objects. `Outcomes` holds, per cell of the grid,
the record that counts (from the results index, hpc.study.index) and what it says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from analysis.schema import FINAL_STATUSES, STATUSES
from hpc.study.layout import cell_stem, parse_stem
from hpc.study.spec import Study

if TYPE_CHECKING:
    from hpc.study.index import ResultsIndex
    from hpc.study.population import Population
    from hpc.study.stale import StaleCheck

# A cell within one dataset: (arch_id, seed), as chunks, manifests and launch records list them.
ArchSeed = tuple[int, int]
NONE = -1  # the status code of a cell without a record
FINAL_CODES = np.array([STATUSES.index(s) for s in FINAL_STATUSES], dtype=np.int8)
FAILED = STATUSES.index("failed")


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


def study_cells(study: Study) -> list[Cell]:
    """Every cell of the study, in dataset order, then architecture id, then seed."""
    n = study.settings.architectures
    return [Cell(d.name, a, s) for d in study.datasets for a in range(n) for s in study.seeds]


class Outcome(Protocol):
    """What the finished rule reads of a result (a CellResult, a record)."""

    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...


def is_final(status: str) -> bool:
    """done or diverged: the cell never runs again, whatever its attempts."""
    return status in FINAL_STATUSES


def is_finished(outcome: Outcome | None, max_attempts: int) -> bool:
    """A cell that no launch runs again: final, or failed as often as allowed. A cell
    without a (readable) result runs."""
    if outcome is None or outcome.status not in STATUSES:
        return False
    return is_final(outcome.status) or outcome.attempts >= max_attempts


def final_mask(codes: np.ndarray) -> np.ndarray:
    """`is_final` over status codes (indices in STATUSES; NONE for no record)."""
    return np.isin(codes, FINAL_CODES)


def finished_mask(codes: np.ndarray, attempts: np.ndarray, max_attempts: int) -> np.ndarray:
    """`is_finished` over status codes and attempt counts."""
    return final_mask(codes) | ((codes == FAILED) & (attempts >= max_attempts))


@dataclass(frozen=True)
class Grid:
    """The study's cells in order: index (d * archs + a) * seeds + s."""

    datasets: tuple[str, ...]
    archs: int
    seeds: int

    @classmethod
    def of(cls, study: Study) -> Grid:
        names = tuple(d.name for d in study.datasets)
        return cls(names, study.settings.architectures, study.settings.seeds)

    def __len__(self) -> int:
        return len(self.datasets) * self.archs * self.seeds

    def index(
        self, dataset: npt.ArrayLike, arch_id: npt.ArrayLike, seed: npt.ArrayLike
    ) -> np.ndarray:
        """Grid positions of (dataset index, arch id, seed) arrays; -1 outside the study."""
        dataset, arch_id, seed = (np.asarray(x, dtype=np.int64) for x in (dataset, arch_id, seed))
        inside = (
            (dataset >= 0)
            & (arch_id >= 0)
            & (arch_id < self.archs)
            & (seed >= 0)
            & (seed < self.seeds)
        )
        return np.where(inside, (dataset * self.archs + arch_id) * self.seeds + seed, -1)

    def dataset_index(self, names: Sequence[str]) -> np.ndarray:
        """Each name's position among the study's datasets, -1 for one it does not hold."""
        position = {name: i for i, name in enumerate(self.datasets)}
        return np.array([position.get(n, -1) for n in names], dtype=np.int64)

    def parts(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dataset index, arch id, seed) of grid positions."""
        index = np.asarray(index, dtype=np.int64)
        cell, seed = np.divmod(index, self.seeds)
        dataset, arch_id = np.divmod(cell, self.archs)
        return dataset, arch_id, seed

    def cell(self, index: int) -> Cell:
        d, a, s = (int(x) for x in self.parts(np.array([index])))
        return Cell(self.datasets[d], a, s)

    def cells(self, index: np.ndarray) -> list[Cell]:
        d, a, s = self.parts(index)
        names = self.datasets
        return [
            Cell(names[i], j, k) for i, j, k in zip(d.tolist(), a.tolist(), s.tolist(), strict=True)
        ]

    def position(self, cell: Cell) -> int:
        """A cell's grid position; ValueError for a cell outside the study."""
        found = self.index(self.dataset_index([cell.dataset]), [cell.arch_id], [cell.seed])
        if found[0] < 0:
            raise ValueError(f"{cell.key} is not a cell of the study")
        return int(found[0])


@dataclass
class Outcomes:
    """Per cell of the grid, the record that counts and what it says (NONE: no record)."""

    grid: Grid
    row: np.ndarray  # the record's row in the results index, -1 for none
    status: np.ndarray  # int8 index in STATUSES, NONE for none
    attempts: np.ndarray
    written: np.ndarray  # when the record was written (POSIX seconds), NaN for none
    train_seconds: np.ndarray
    stale: np.ndarray  # the record was trained with what the study no longer says
    duplicates: np.ndarray  # cells with more than one final record (one counts)

    def finished(self, max_attempts: int) -> np.ndarray:
        """The cells no launch runs again: a current final record, or failed too often."""
        return finished_mask(self.status, self.attempts, max_attempts) & ~self.stale

    def final(self) -> np.ndarray:
        """Cells whose counting record is current and done or diverged."""
        return final_mask(self.status) & ~self.stale


def choose(
    grid: Grid,
    cell: np.ndarray,
    status: np.ndarray,
    attempts: np.ndarray,
    written: np.ndarray,
    stale: np.ndarray,
) -> np.ndarray:
    """The record that counts for each cell of the grid (its row, -1 for none), of records
    given as arrays (`cell`: grid position, -1 outside the study); see `counting`."""
    keys, rows = counting(cell, status, attempts, written, stale)
    out = np.full(len(grid), -1, dtype=np.int64)
    out[keys] = rows
    return out


def counting(
    key: npt.ArrayLike,
    status: npt.ArrayLike,
    attempts: npt.ArrayLike,
    written: npt.ArrayLike,
    stale: npt.ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rows): for each distinct cell key (negative: ignored) the row of the record
    that counts. One rule: a record of what the study says now beats a stale one; then a
    final record beats a failed one; among finals the earliest written (two launches that
    ran one cell count it once); among failed ones the highest attempt, then the latest."""
    key, status = np.asarray(key, dtype=np.int64), np.asarray(status)
    rows = np.flatnonzero(key >= 0)
    final = final_mask(status[rows])
    written = np.asarray(written, dtype=np.float64)[rows]
    tries = np.asarray(attempts, dtype=np.float64)[rows]
    # Within a class lower sorts first: finals by time written, failures by attempt then time.
    first = np.where(final, written, -tries)
    second = np.where(final, rows.astype(np.float64), -written)
    order = np.lexsort((second, first, ~final, np.asarray(stale)[rows], key[rows]))
    ordered = rows[order]
    keys, start = np.unique(key[ordered], return_index=True)
    return keys, ordered[start]


def duplicate_mask(
    grid: Grid, cell: np.ndarray, status: np.ndarray, stale: np.ndarray
) -> np.ndarray:
    """Cells with more than one current final record."""
    keep = (cell >= 0) & final_mask(status) & ~stale
    counts = np.bincount(cell[keep], minlength=len(grid))
    return counts > 1


def outcomes(grid: Grid, index: ResultsIndex, stale: np.ndarray) -> Outcomes:
    """Per cell of the grid, the record of the index that counts (`choose`)."""
    records = index.records
    position = grid.dataset_index(index.datasets)
    dataset = position[records["dataset"]] if len(index) else np.zeros(0, dtype=np.int64)
    cell = grid.index(dataset, records["arch_id"], records["seed"])
    row = choose(grid, cell, records["status"], records["attempts"], records["written"], stale)
    has = row >= 0
    pick = np.where(has, row, 0)

    def gathered(values: np.ndarray, empty: float) -> np.ndarray:
        if not len(values):
            return np.full(len(grid), empty)
        return np.where(has, values[pick], empty)

    return Outcomes(
        grid=grid,
        row=row,
        status=gathered(records["status"], NONE).astype(np.int8),
        attempts=gathered(records["attempts"], 0).astype(np.int64),
        written=gathered(records["written"], np.nan),
        train_seconds=gathered(records["train_seconds"], np.nan),
        stale=gathered(stale, False).astype(bool),
        duplicates=duplicate_mask(grid, cell, records["status"], stale),
    )


@dataclass
class Standing:
    """A study's results now: the index, which records are stale, and what counts per cell."""

    index: ResultsIndex
    stale: StaleCheck
    outcomes: Outcomes

    def stale_cells(self) -> np.ndarray:
        """Grid positions of cells whose counting record is stale."""
        return np.flatnonzero(self.outcomes.stale)


def standing(study: Study, population: Population | None = None) -> Standing:
    """Bring the results index up to date and read the study's cells through it."""
    from hpc.study.index import update_index
    from hpc.study.population import read_population
    from hpc.study.stale import check_stale

    index = update_index(study)
    if population is None and len(index):
        population = read_population(study)
    stale = check_stale(study, index, population)
    return Standing(index, stale, outcomes(Grid.of(study), index, stale.records))
