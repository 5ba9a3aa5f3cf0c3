"""The planner: which cells still need a run, what each costs, and how they group into
cohorts (trained in lockstep from one loader), chunks (whole cohorts of one dataset, sized to
fit a task's time limit) and arrays (split at MaxArraySize).

Pure bookkeeping over files: no scheduler is asked here (the caller gives its array size)
and no data is read. Prices come from hpc/scheduling/pricing.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.schema import STATUSES
from hpc.scheduling.cost import cohorts
from hpc.scheduling.pricing import (
    CELL_OVERHEAD_S,
    Pricing,
    Projection,
    format_cohorts,
    format_projection,
    price,
    projections,
)
from hpc.study.datasets import dataset_sizes
from hpc.study.population import Population
from hpc.study.results import ArchSeed, Cell, Grid, Outcomes, standing
from hpc.study.spec import ClusterSpec, Study

__all__ = ["CELL_OVERHEAD_S", "CHUNK_OVERHEAD_S"]
CHUNK_OVERHEAD_S = 120.0  # starting Python, building the loaders (FFCV compiles them)
DONE = STATUSES.index("done")


@dataclass(frozen=True)
class PlannedChunk:
    """Cells of one dataset that one array task runs in a row, as the planner sized them."""

    dataset: str
    cells: tuple[ArchSeed, ...]
    seconds: float  # estimated, chunk overhead included
    cohort: int = 1  # the most cells the worker trains in lockstep (whole cohorts per chunk)
    cuda_graphs: bool = False  # members step as CUDA graphs where the worker finds CUDA


@dataclass(frozen=True)
class Array:
    """Chunks submitted as one array job; `label` names its folder and its job."""

    label: str
    dataset: str
    chunks: tuple[PlannedChunk, ...]
    cluster: ClusterSpec


@dataclass(frozen=True)
class DatasetCost:
    """What planning assumes about a dataset's cells: their pricing on the study's device
    kind, calibrated by the cells already measured."""

    name: str
    train_images: int
    test_images: int
    epochs: int
    flops: np.ndarray  # per architecture id, at the dataset's resolution
    calibration: float  # measured / estimated seconds of its finished cells (1: none yet)
    assumed: bool  # the image counts are a guess (the registry does not know them)
    pricing: Pricing

    def cohort_seconds(self, arch_ids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Wall seconds of cohorts (their members share them), start-up included: `arch_ids`
        are their members one after another, `sizes` how many each has."""
        work = self.pricing.work
        member = work.member_seconds(arch_ids)
        ends = np.cumsum(sizes)
        compute = np.add.reduceat(member, ends - sizes) if len(member) else np.zeros(0)
        wall = work.combine(work.data_seconds, compute, sizes) + CELL_OVERHEAD_S * sizes
        return self.calibration * wall

    def seconds(self, arch_id: int | np.ndarray) -> float | np.ndarray:
        """The wall seconds a cell of these architectures records: its cohort's, taken as K
        members like it (cells measured in cohorts of another size calibrate off by that)."""
        k = self.pricing.k
        ids = np.atleast_1d(np.asarray(arch_id, dtype=np.int64))
        wall = self.cohort_seconds(np.repeat(ids, k), np.full(len(ids), k))
        return wall if np.ndim(arch_id) else float(wall[0])


@dataclass(frozen=True)
class Plan:
    """The cells that still need a run, grouped for submission."""

    total: int  # cells of the study: finished + active + len(to_run)
    finished: int  # done, diverged, or failed past the retry limit
    active: int  # not finished, and queued or running now
    grid: Grid
    to_run: np.ndarray = field(repr=False)  # grid positions of the cells that need a run
    attempts: np.ndarray = field(repr=False)  # failed attempts each of them has made
    chunks: tuple[PlannedChunk, ...] = ()
    arrays: tuple[Array, ...] = ()
    gpu_hours: float = 0.0  # estimated for the cells to run of datasets asking for GPUs
    max_array_size: int = 1
    notes: tuple[str, ...] = field(default=())
    lanes: int | None = None  # local runs: workers at once (arrays do not apply)
    pricing: dict[str, Pricing] = field(default_factory=dict)  # per dataset: K, rows, why
    projections: tuple[Projection, ...] = ()  # the whole study per device kind (dry runs)
    cpu_hours: float = 0.0  # estimated for the cells to run of datasets with `gpus = 0`

    @functools.cached_property
    def missing(self) -> tuple[Cell, ...]:
        """The cells that need a run, in study order."""
        return tuple(self.grid.cells(self.to_run))

    def attempts_of(self, dataset: str) -> dict[ArchSeed, int]:
        """Failed attempts made before, of one dataset's cells to run (those with any)."""
        d, a, s = self.grid.parts(self.to_run)
        mine = (d == self.grid.datasets.index(dataset)) & (self.attempts > 0)
        rows = zip(a[mine].tolist(), s[mine].tolist(), self.attempts[mine].tolist(), strict=True)
        return {(arch, seed): n for arch, seed, n in rows}


def dataset_costs(
    study: Study, population: Population, outcomes: Outcomes | None
) -> dict[str, DatasetCost]:
    """Cost model per dataset: its cells priced on the study's device kind in cohorts,
    calibrated by measured cells."""
    costs: dict[str, DatasetCost] = {}
    for entry in study.datasets:
        train, test, _, assumed = dataset_sizes(entry)
        pricing = price(study, entry, population)
        flops = pricing.flops
        costs[entry.name] = DatasetCost(
            entry.name, train, test, entry.recipe.epochs, flops, 1.0, assumed, pricing
        )
    return _calibrate(costs, outcomes)


def _calibrate(costs: dict[str, DatasetCost], outcomes: Outcomes | None) -> dict[str, DatasetCost]:
    """Each dataset's median of measured / estimated seconds over its done cells (the
    median over all datasets for one without any)."""
    ratios: dict[str, np.ndarray] = {name: np.zeros(0) for name in costs}
    if outcomes is not None:
        grid = outcomes.grid
        done = outcomes.final() & (outcomes.status == DONE) & (outcomes.train_seconds > 0)
        d, a, _ = grid.parts(np.flatnonzero(done))
        for i, name in enumerate(grid.datasets):
            cost = costs.get(name)
            mine = np.flatnonzero(done)[d == i]
            archs = a[d == i]
            if cost is None or not len(mine):
                continue
            inside = archs < len(cost.flops)
            estimate = cost.seconds(archs[inside])
            ratios[name] = outcomes.train_seconds[mine[inside]] / estimate
    everything = np.concatenate(list(ratios.values())) if ratios else np.zeros(0)
    fallback = float(np.median(everything)) if len(everything) else 1.0
    return {
        name: DatasetCost(
            c.name,
            c.train_images,
            c.test_images,
            c.epochs,
            c.flops,
            float(np.median(ratios[name])) if len(ratios[name]) else fallback,
            c.assumed,
            c.pricing,
        )
        for name, c in costs.items()
    }


def chunk_cells(
    dataset: str, cells: list[ArchSeed], seconds: list[float], capacity: float
) -> list[PlannedChunk]:
    """Consecutive cells grouped into as few chunks as fit `capacity` seconds each (chunk
    overhead included), cut where the running total is nearest to equal shares. A cell
    longer than the capacity gets a chunk of its own: it resumes from checkpoints across
    requeues."""
    if not cells:
        return []
    budget = max(capacity - CHUNK_OVERHEAD_S, 1.0)
    cum = np.cumsum(seconds)
    total = float(cum[-1])
    bounds = _first_fit(cum, total, budget, max(1, math.ceil(total / budget)))
    if bounds is None:
        return [
            PlannedChunk(dataset, (c,), t + CHUNK_OVERHEAD_S)
            for c, t in zip(cells, seconds, strict=True)
        ]
    cumz = np.concatenate(([0.0], cum))
    sums = cumz[bounds[1:]] - cumz[bounds[:-1]]
    return [
        PlannedChunk(dataset, tuple(cells[b:e]), float(t) + CHUNK_OVERHEAD_S)
        for b, e, t in zip(bounds[:-1].tolist(), bounds[1:].tolist(), sums, strict=True)
    ]


def chunk_cohorts(
    dataset: str,
    groups: list[list[ArchSeed]],
    seconds: list[float],
    capacity: float,
    cohort: int = 1,
    cuda_graphs: bool = False,
) -> list[PlannedChunk]:
    """Whole cohorts (their members share the wall `seconds`) grouped into chunks as
    `chunk_cells` groups cells; a cohort longer than the capacity gets a chunk of its own."""
    units = chunk_cells(dataset, [(i, 0) for i in range(len(groups))], seconds, capacity)
    return [
        PlannedChunk(
            dataset,
            tuple(cell for i, _ in unit.cells for cell in groups[i]),
            unit.seconds,
            cohort,
            cuda_graphs,
        )
        for unit in units
    ]


# Candidate chunk counts are tried in ascending batches of at most this many; within a
# batch, cuts are checked in blocks that double, so a count that does not fit is dropped at
# its first part over the budget. Both keep the arrays bounded (about _BLOCK_CELLS entries).
_MAX_BATCH = 256
_BLOCK_CELLS = 1 << 20


def _first_fit(cum: np.ndarray, total: float, budget: float, first: int) -> np.ndarray | None:
    """The bounds (0, ..., n) of the smallest chunk count k >= `first` whose cuts nearest to
    k equal shares leave no part of two or more cells over `budget`; None if none does."""
    n = len(cum)
    k, width = first, 1
    while k <= n:
        counts = np.arange(k, min(k + width, n + 1))
        fits = _fitting(cum, total, budget, counts)
        if fits.any():
            best = int(counts[int(fits.argmax())])
            ends = _cut_ends(cum, total, np.array([best]), np.arange(1, best + 1))[0]
            return np.unique(np.concatenate(([0], ends)))
        k, width = k + len(counts), min(2 * width, _MAX_BATCH)
    return None


def _fitting(cum: np.ndarray, total: float, budget: float, counts: np.ndarray) -> np.ndarray:
    """Per chunk count, whether every part of two or more cells fits `budget`."""
    cumz = np.concatenate(([0.0], cum))
    alive = np.ones(len(counts), dtype=bool)
    last = np.zeros(len(counts), dtype=np.int64)  # the bound the checked parts end at
    j, step = 1, 16
    while True:
        rows = np.flatnonzero(alive & (counts >= j))
        if rows.size == 0:
            return alive
        step = min(step, max(16, _BLOCK_CELLS // rows.size))
        ends = _cut_ends(cum, total, counts[rows], np.arange(j, j + step))
        begins = np.concatenate((last[rows, None], ends[:, :-1]), axis=1)
        over = ~(cumz[ends] - cumz[begins] <= budget) & (ends - begins > 1)
        alive[rows[over.any(axis=1)]] = False
        last[rows] = ends[:, -1]
        j, step = j + step, 2 * step


def _cut_ends(cum: np.ndarray, total: float, counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """End (exclusive) of part j for each chunk count k (rows) and j (columns): the cut
    after the cell whose running total is nearer j * total / k; the last part (j >= k)
    ends at the last cell."""
    n = len(cum)
    k, j = counts[:, None], shares[None, :]
    share = j * total / k
    i = np.searchsorted(cum, share)
    below = cum[np.maximum(i - 1, 0)]
    above = cum[np.minimum(i, n - 1)]
    # The cut after cell i-1 or after cell i, whichever total is nearer the share.
    down = (i > 0) & ((i == n) | (share - below <= above - share))
    return np.where(j >= k, n, i + 1 - down)


def make_plan(
    study: Study,
    population: Population,
    *,
    array_size: int,
    outcomes: Outcomes | None = None,
    active: np.ndarray | Iterable[Cell] = (),
    lanes: int | None = None,
    project: bool = False,
) -> Plan:
    """Plan the cells that are neither finished nor queued or running (`active`: a mask
    over the study's grid, or cells), in arrays of at most `array_size` chunks (the
    scheduler's limit). A stale cell (trained with what the study no longer says) is to run.

    `lanes` (local runs) splits the work into enough chunks to keep that many workers busy;
    `project` adds the whole study's projections per device kind (for dry runs).
    """
    if outcomes is None:
        outcomes = standing(study, population).outcomes
    grid = outcomes.grid
    finished = outcomes.finished(study.settings.max_attempts)
    # A queued or running task lists cells it has finished already: they count as finished.
    busy = _active_mask(grid, active) & ~finished
    to_run = np.flatnonzero(~finished & ~busy)
    costs = dataset_costs(study, population, outcomes)
    units = _cohorts(grid, costs, to_run)
    spread = None
    if lanes:
        # About four chunks per worker: they take the next chunk as they finish, so the
        # last ones end close together.
        total = sum(float(seconds.sum()) for _, seconds in units.values())
        spread = total / (4 * lanes) + CHUNK_OVERHEAD_S
    chunks, arrays, hours = _group(study, costs, units, spread, array_size)
    notes = tuple(
        f"{name}: image counts unknown to the registry; assumed {c.train_images:,} train / "
        f"{c.test_images:,} test"
        for name, c in costs.items()
        if c.assumed
    )
    return Plan(
        total=len(grid),
        finished=int(finished.sum()),
        active=int(busy.sum()),
        grid=grid,
        to_run=to_run,
        attempts=np.where(outcomes.stale[to_run], 0, outcomes.attempts[to_run]),
        chunks=tuple(chunks),
        arrays=tuple(arrays),
        gpu_hours=hours["GPU"],
        cpu_hours=hours["CPU"],
        max_array_size=array_size,
        notes=notes,
        lanes=lanes,
        pricing={name: c.pricing for name, c in costs.items()},
        projections=tuple(projections(study, population)) if project else (),
    )


def _active_mask(grid: Grid, active: np.ndarray | Iterable[Cell]) -> np.ndarray:
    if isinstance(active, np.ndarray):
        return active.astype(bool)
    mask = np.zeros(len(grid), dtype=bool)
    cells = [c for c in active if c.dataset in grid.datasets]
    if cells:
        found = grid.index(
            grid.dataset_index([c.dataset for c in cells]),
            [c.arch_id for c in cells],
            [c.seed for c in cells],
        )
        mask[found[found >= 0]] = True
    return mask


Units = dict[str, tuple[list[list[ArchSeed]], np.ndarray]]


def _cohorts(grid: Grid, costs: Mapping[str, DatasetCost], cells: np.ndarray) -> Units:
    """Per dataset, its cells to run (grid positions, study order) in cohorts as the worker
    groups them (`cost.cohorts`: one seed each, at most K) and each cohort's wall seconds,
    which its members share."""
    d, a, s = grid.parts(cells)
    units: Units = {}
    for i, name in enumerate(grid.datasets):
        mine = d == i
        if not mine.any():
            continue
        pairs = list(zip(a[mine].tolist(), s[mine].tolist(), strict=True))
        groups = cohorts(pairs, lambda cell: cell[1], costs[name].pricing.k)
        members = np.fromiter((arch for g in groups for arch, _ in g), np.int64, len(pairs))
        counts = np.fromiter(map(len, groups), np.int64, len(groups))
        units[name] = (groups, costs[name].cohort_seconds(members, counts))
    return units


def _group(
    study: Study,
    costs: Mapping[str, DatasetCost],
    units: Units,
    spread: float | None,
    array_size: int,
) -> tuple[list[PlannedChunk], list[Array], dict[str, float]]:
    """The missing cells' cohorts in chunks per dataset, the chunks in arrays, and their
    GPU-hours and CPU-hours."""
    chunks: list[PlannedChunk] = []
    arrays: list[Array] = []
    hours = {"GPU": 0.0, "CPU": 0.0}
    for entry in study.datasets:
        if entry.name not in units:
            continue
        groups, seconds = units[entry.name]
        pricing = costs[entry.name].pricing
        limit = entry.cluster.margin * entry.cluster.time_min * 60
        capacity = min(limit, spread) if spread else limit
        own = chunk_cohorts(
            entry.name, groups, seconds.tolist(), capacity, pricing.k, pricing.graphs
        )
        chunks.extend(own)
        kind, spent = device_hours(entry.cluster, float(seconds.sum()))
        hours[kind] += spent
        for k, start in enumerate(range(0, len(own), array_size)):
            part = tuple(own[start : start + array_size])
            arrays.append(Array(f"{entry.name}-{k}", entry.name, part, entry.cluster))
    return chunks, arrays, hours


def device_hours(cluster: ClusterSpec, seconds: Any) -> tuple[str, Any]:
    """What `seconds` of a task cost: ("GPU", GPU-hours) where tasks ask for GPUs, else
    ("CPU", CPU-hours), each at what a task asks for."""
    if cluster.gpus:
        return "GPU", seconds * cluster.gpus / 3600
    return "CPU", seconds * cluster.cpus / 3600


def remaining_hours(
    study: Study, population: Population, outcomes: Outcomes
) -> tuple[float, float]:
    """Estimated (GPU-hours, CPU-hours) of every cell not finished yet (queued and running
    included)."""
    plan = make_plan(study, population, outcomes=outcomes, array_size=1 << 30)
    return plan.gpu_hours, plan.cpu_hours


def hours_text(gpu_hours: float, cpu_hours: float, digits: int = 1) -> str:
    """`12.0 GPU-hours`, `3.0 CPU-hours`, or both: what a study's tasks ask for."""
    parts = [
        f"{value:,.{digits}f} {kind}-hours"
        for kind, value in (("GPU", gpu_hours), ("CPU", cpu_hours))
        if value
    ]
    return " and ".join(parts) or f"{0:.{digits}f} GPU-hours"


def format_plan(plan: Plan, study: Study) -> str:
    """The `launch --dry-run` text: cells, chunks, arrays and GPU-hours."""
    lines = [
        f"study {study.name}: {plan.total:,} cells, {plan.finished:,} finished, "
        f"{plan.active:,} queued or running, {len(plan.to_run):,} to run",
        f"{len(plan.chunks):,} chunks "
        + (
            f"for {plan.lanes} local workers"
            if plan.lanes
            else f"in {len(plan.arrays):,} arrays (MaxArraySize {plan.max_array_size:,})"
        )
        + f"; estimated {hours_text(plan.gpu_hours, plan.cpu_hours)}",
    ]
    if plan.arrays:
        lines.append(
            f"  {'array':<24} {'tasks':>6} {'cells':>7} {'K':>3} {'longest task':>13} "
            f"{'time limit':>11}"
        )
    for array in plan.arrays:
        cells = sum(len(c.cells) for c in array.chunks)
        longest = max(c.seconds for c in array.chunks) / 60
        lines.append(
            f"  {array.label:<24} {len(array.chunks):>6} {cells:>7} {array.chunks[0].cohort:>3} "
            f"{longest:>10.0f} min {array.cluster.time_min:>7} min"
        )
    lines += format_cohorts(plan.pricing, _cohort_counts(plan))
    lines += format_projection(plan.projections)
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)


def _cohort_counts(plan: Plan) -> dict[str, int]:
    """Cohorts to run per dataset: per chunk, its cells of each seed in groups of K."""
    counts: dict[str, int] = {}
    for chunk in plan.chunks:
        seeds: dict[int, int] = {}
        for _, seed in chunk.cells:
            seeds[seed] = seeds.get(seed, 0) + 1
        n = sum(math.ceil(v / chunk.cohort) for v in seeds.values())
        counts[chunk.dataset] = counts.get(chunk.dataset, 0) + n
    return counts
