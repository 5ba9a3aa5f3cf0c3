"""The planner: which cells still need a run, what each costs, and how they group into
chunks (one dataset each, sized to fit a task's time limit) and arrays (split at MaxArraySize).

Pure bookkeeping over files: no scheduler is asked here (the caller gives its array size)
and no data is read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hpc.study.datasets import dataset_sizes
from hpc.study.population import Population, dataset_arch
from hpc.study.results import ArchSeed, Cell, ResultSummary, is_finished, scan_results, study_cells
from hpc.study.spec import ClusterSpec, Study

CELL_OVERHEAD_S = 30.0  # building the model, the last evaluation, writing the result
CHUNK_OVERHEAD_S = 120.0  # starting Python, building the loaders (FFCV compiles them)


@dataclass(frozen=True)
class PlannedChunk:
    """Cells of one dataset that one array task runs in a row, as the planner sized them."""

    dataset: str
    cells: tuple[ArchSeed, ...]
    seconds: float  # estimated, chunk overhead included


@dataclass(frozen=True)
class Array:
    """Chunks submitted as one array job; `label` names its folder and its job."""

    label: str
    dataset: str
    chunks: tuple[PlannedChunk, ...]
    cluster: ClusterSpec


@dataclass(frozen=True)
class DatasetCost:
    """What planning assumes about a dataset's cells."""

    name: str
    train_images: int
    test_images: int
    epochs: int
    flops: np.ndarray  # per architecture id, at the dataset's resolution
    calibration: float  # measured / estimated seconds of its finished cells (1: none yet)
    assumed: bool  # the image counts are a guess (the registry does not know them)

    def seconds(self, arch_id: int, throughput: float) -> float:
        work = self.flops[arch_id] * self.epochs * (3 * self.train_images + self.test_images)
        return self.calibration * (work / throughput + CELL_OVERHEAD_S)


@dataclass(frozen=True)
class Plan:
    """The cells that still need a run, grouped for submission."""

    total: int  # cells of the study: finished + active + len(missing)
    finished: int  # done, diverged, or failed past the retry limit
    active: int  # not finished, and queued or running now
    missing: tuple[Cell, ...]
    chunks: tuple[PlannedChunk, ...]
    arrays: tuple[Array, ...]
    gpu_hours: float  # estimated for the missing cells of datasets whose tasks ask for GPUs
    max_array_size: int
    notes: tuple[str, ...] = field(default=())
    lanes: int | None = None  # local runs: workers at once (arrays do not apply)
    cpu_hours: float = 0.0  # estimated for the missing cells of datasets with `gpus = 0`


def dataset_costs(
    study: Study, population: Population, results: Mapping[Cell, ResultSummary]
) -> dict[str, DatasetCost]:
    """Cost model per dataset: flops x images x epochs, calibrated by measured cells."""
    from anynet.complexity import complexity_batch

    costs: dict[str, DatasetCost] = {}
    for entry in study.datasets:
        train, test, classes, assumed = dataset_sizes(entry)
        archs = [dataset_arch(a, entry) for a in population.archs]
        flops = np.zeros(len(archs), dtype=np.float64)
        # complexity_batch takes one stem and stage count per call: group by them.
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(archs):
            groups.setdefault((a.stem, a.stem_width, a.se_ratio, a.num_stages), []).append(i)
        for (stem, stem_width, se_ratio, _), ids in groups.items():
            rows = [archs[i] for i in ids]
            values = complexity_batch(
                np.asarray([a.depths for a in rows]),
                np.asarray([a.widths for a in rows]),
                np.asarray([a.bottleneck_ratios for a in rows]),
                np.asarray([a.group_widths for a in rows]),
                stem=stem,
                stem_width=stem_width,
                se_ratio=se_ratio,
                resolution=entry.resolution,
                num_classes=classes,
            )[0]
            flops[ids] = values
        costs[entry.name] = DatasetCost(
            entry.name, train, test, entry.recipe.epochs, flops, 1.0, assumed
        )
    return _calibrate(study, costs, results)


def _calibrate(
    study: Study, costs: dict[str, DatasetCost], results: Mapping[Cell, ResultSummary]
) -> dict[str, DatasetCost]:
    ratios: dict[str, list[float]] = {name: [] for name in costs}
    for cell, summary in results.items():
        cost = costs.get(cell.dataset)
        if cost is None or summary.status != "done" or not summary.train_seconds > 0:
            continue
        if cell.arch_id >= len(cost.flops):
            continue
        throughput = study.dataset(cell.dataset).cluster.throughput
        ratios[cell.dataset].append(summary.train_seconds / cost.seconds(cell.arch_id, throughput))
    everything = [r for values in ratios.values() for r in values]
    fallback = float(np.median(everything)) if everything else 1.0
    return {
        name: DatasetCost(
            c.name,
            c.train_images,
            c.test_images,
            c.epochs,
            c.flops,
            float(np.median(ratios[name])) if ratios[name] else fallback,
            c.assumed,
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
    results: Mapping[Cell, ResultSummary] | None = None,
    active: Iterable[Cell] = (),
    lanes: int | None = None,
) -> Plan:
    """Plan the cells that are neither finished nor queued or running, in arrays of at most
    `array_size` chunks (the scheduler's limit).

    `lanes` (local runs) splits the work into enough chunks to keep that many workers busy.
    """
    if results is None:
        results = scan_results(study)
    costs = dataset_costs(study, population, results)
    cells = study_cells(study)
    attempts = study.settings.max_attempts
    finished = {c for c in cells if is_finished(results.get(c), attempts)}
    # A queued or running task lists cells it has finished already: they count as finished.
    active = (set(active) & set(cells)) - finished
    missing = [c for c in cells if c not in active and c not in finished]
    seconds = {
        c: costs[c.dataset].seconds(c.arch_id, study.dataset(c.dataset).cluster.throughput)
        for c in missing
    }
    spread = None
    if lanes:
        # About four chunks per worker: they take the next chunk as they finish, so the
        # last ones end close together.
        spread = sum(seconds.values()) / (4 * lanes) + CHUNK_OVERHEAD_S
    chunks, arrays, hours = _group(study, missing, seconds, spread, array_size)
    notes = tuple(
        f"{name}: image counts unknown to the registry; assumed {c.train_images:,} train / "
        f"{c.test_images:,} test"
        for name, c in costs.items()
        if c.assumed
    )
    return Plan(
        total=len(cells),
        finished=len(finished),
        active=len(active),
        missing=tuple(missing),
        chunks=tuple(chunks),
        arrays=tuple(arrays),
        gpu_hours=hours["GPU"],
        max_array_size=array_size,
        notes=notes,
        lanes=lanes,
        cpu_hours=hours["CPU"],
    )


def device_hours(cluster: ClusterSpec, seconds: float) -> tuple[str, float]:
    """What `seconds` of a task cost: ("GPU", GPU-hours) where tasks ask for GPUs, else
    ("CPU", CPU-hours), each at what a task asks for."""
    if cluster.gpus:
        return "GPU", seconds * cluster.gpus / 3600
    return "CPU", seconds * cluster.cpus / 3600


def _group(
    study: Study,
    missing: list[Cell],
    seconds: Mapping[Cell, float],
    spread: float | None,
    array_size: int,
) -> tuple[list[PlannedChunk], list[Array], dict[str, float]]:
    """The missing cells in chunks per dataset, the chunks in arrays, and their GPU-hours
    and CPU-hours."""
    chunks: list[PlannedChunk] = []
    arrays: list[Array] = []
    hours = {"GPU": 0.0, "CPU": 0.0}
    by_dataset: dict[str, list[Cell]] = {}
    for c in missing:
        by_dataset.setdefault(c.dataset, []).append(c)
    for entry in study.datasets:
        mine = by_dataset.get(entry.name, [])
        if not mine:
            continue
        limit = entry.cluster.margin * entry.cluster.time_min * 60
        mine_seconds = [seconds[c] for c in mine]
        own = chunk_cells(
            entry.name,
            [(c.arch_id, c.seed) for c in mine],
            mine_seconds,
            min(limit, spread) if spread else limit,
        )
        chunks.extend(own)
        kind, spent = device_hours(entry.cluster, sum(mine_seconds))
        hours[kind] += spent
        for k, start in enumerate(range(0, len(own), array_size)):
            part = tuple(own[start : start + array_size])
            arrays.append(Array(f"{entry.name}-{k}", entry.name, part, entry.cluster))
    return chunks, arrays, hours


def remaining_hours(
    study: Study, population: Population, results: Mapping[Cell, ResultSummary]
) -> tuple[float, float]:
    """Estimated (GPU-hours, CPU-hours) of every cell not finished yet (queued and running
    included)."""
    plan = make_plan(study, population, results=results, array_size=1 << 30)
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
        f"{plan.active:,} queued or running, {len(plan.missing):,} to run",
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
            f"  {'array':<24} {'tasks':>6} {'cells':>7} {'longest task':>13} {'time limit':>11}"
        )
    for array in plan.arrays:
        cells = sum(len(c.cells) for c in array.chunks)
        longest = max(c.seconds for c in array.chunks) / 60
        lines.append(
            f"  {array.label:<24} {len(array.chunks):>6} {cells:>7} {longest:>10.0f} min "
            f"{array.cluster.time_min:>7} min"
        )
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)
