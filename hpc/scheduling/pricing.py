"""A study's cohorts on its device kind: per dataset the rows that price its cells, the K of
its cohorts and why, whether CUDA graphs step them, and projections of the whole study.

`[cluster] gpu` names the device kind (hpc/study/throughput.toml; unnamed: the table's
default for GPU or CPU studies), `[cluster] cohort` the K ("auto": `cost.choose_cohort` under
the memory cap) and `[cluster] cuda_graphs` the stepping ("auto": on for cohorts in bf16 on a
kind with a CUDA-graph model row). No data is read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpc.scheduling import cost
from hpc.study.datasets import dataset_sizes, planned_backend
from hpc.study.population import Population, dataset_arch
from hpc.study.spec import DatasetEntry, Study
from hpc.study.throughput import Device, Table, load_table

# Building a member's model, its last evaluation, writing its result (each cell's start-up).
CELL_OVERHEAD_S = 30.0


def arch_counts(archs: Sequence, resolution: int, classes: int) -> np.ndarray:
    """(flops, params, acts) of each architecture at `resolution`: a (3, n) array."""
    from anynet.complexity import complexity_batch

    out = np.zeros((3, len(archs)), dtype=np.float64)
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
            resolution=resolution,
            num_classes=classes,
        )
        out[:, ids] = np.asarray(values, dtype=np.float64)
    return out


@dataclass(frozen=True)
class Pricing:
    """One dataset's cells on one device kind."""

    dataset: str
    kind: str
    k: int  # cells per cohort
    graphs: bool  # members step as CUDA graphs (where the worker finds CUDA)
    work: cost.Work
    why: str  # how K was chosen, in the rows' words
    measured: bool  # every rate used comes from a measured row that stands for it
    estimated: str  # what is not: "" when measured
    assumed_sizes: bool  # the registry does not know the image counts
    flops: np.ndarray  # multiply-adds per image of each architecture id, at its resolution

    def cohort_seconds(self, arch_ids: Sequence[int]) -> float:
        """A cohort's wall seconds, its members' start-up included."""
        return self.work.cohort_seconds(arch_ids) + CELL_OVERHEAD_S * len(arch_ids)


@dataclass(frozen=True)
class _Inputs:
    entry: DatasetEntry
    device: Device
    train: int
    test: int
    counts: np.ndarray  # (flops, params, acts) at the dataset's resolution
    flops_at: functools.partial
    assumed: bool


def price(
    study: Study,
    entry: DatasetEntry,
    population: Population,
    *,
    kind: str | None = None,
    graphs: bool | None = None,
    table: Table | None = None,
) -> Pricing:
    """The pricing of a dataset's cells on `kind` (default: the study's), with CUDA graphs as
    `graphs` says (default: as `[cluster] cuda_graphs` says)."""
    table = table or load_table()
    cluster = entry.cluster
    own = cluster.gpu or table.default_kind(cluster.gpus, study.settings.device)
    kind = kind or own
    inputs = _inputs(entry, population, table.device(kind))
    # `[cluster] throughput` prices the study's own kind; another is priced from the table.
    throughput = cluster.throughput if kind == own else 0.0
    wanted = cluster.cuda_graphs if graphs is None else graphs
    options = (
        [True, False] if wanted is not False and _graphs_apply(entry, table, kind) else [False]
    )
    if wanted is True and options == [False]:
        options = [True]  # asked for: the worker steps so, priced as eager (no graph row)
    for use in options:
        pricing = _price(inputs, table, kind, use, throughput)
        if pricing.k > 1 or wanted is True or use is False:
            return pricing
    raise AssertionError("unreachable: the last option is eager")


def _graphs_apply(entry: DatasetEntry, table: Table, kind: str) -> bool:
    """Whether "auto" may step this dataset's cohorts as CUDA graphs: bf16 on a GPU kind with a
    CUDA-graph model row (measured there), and no torch.compile."""
    recipe = entry.recipe
    bf16 = recipe.precision in ("bf16", "auto")
    rows = [r for r in table.of(kind, "model") if r.cuda_graphs]
    return table.device(kind).gpu and bf16 and not recipe.compile and bool(rows)


def _inputs(entry: DatasetEntry, population: Population, device: Device) -> _Inputs:
    train, test, classes, assumed = dataset_sizes(entry)
    archs = [dataset_arch(a, entry) for a in population.archs]
    counts = arch_counts(archs, entry.resolution, classes)
    flops_at = functools.partial(_flops_at, tuple(archs), classes)
    return _Inputs(entry, device, train, test, counts, flops_at, assumed)


@functools.lru_cache(maxsize=64)
def _flops_at(archs: tuple, classes: int, resolution: int) -> np.ndarray:
    return arch_counts(archs, resolution, classes)[0]


def _price(inputs: _Inputs, table: Table, kind: str, graphs: bool, throughput: float) -> Pricing:
    entry, device = inputs.entry, inputs.device
    flops, params, acts = inputs.counts
    res, cluster, recipe = entry.resolution, entry.cluster, entry.recipe
    if throughput > 0:
        model = None
        rates = throughput / (3 * np.maximum(flops, 1.0))
        loader = None
    else:
        model = cost.model_rates(table, kind, res, flops, inputs.flops_at, graphs)
        rates = model.images_per_s
        spec = entry.prepared_spec
        loader = cost.loader_rate(table, kind, planned_backend(entry), spec.encoding, res)
    work = cost.Work(
        inputs.train,
        inputs.test,
        recipe.epochs,
        rates,
        loader.images_per_s if loader else math.inf,
        device.overlap,
        device.member_overhead,
    )
    element = 2 if device.gpu and recipe.precision in ("bf16", "auto") else 4
    rows = model.used() if model else []
    row_gb = rows[0].memory_gb if len(rows) == 1 else 0.0
    memory = cost.member_memory(params, acts, recipe.batch_size, element, graphs, row_gb)
    limit = None if device.gpu else float(cluster.mem_gb)
    k_mem = cost.memory_cap(device, memory, limit)
    k_cap = min(cost.AUTO_MAX, k_mem, len(rates))
    k_row = max((r.cohort for r in rows), default=1)
    if cluster.cohort == "auto":
        k = cost.choose_cohort(work, k_cap, k_row) if model else 1
        why = _why(work, model, loader, k_row, k_mem, memory)
    else:
        k = int(cluster.cohort)
        why = f"cohort = {k} in study.toml"
    measured = bool(model and model.measured and loader and loader.measured)
    estimated = "" if measured else _estimated(model, loader, device)
    return Pricing(
        entry.name, kind, k, graphs, work, why, measured, estimated, inputs.assumed, flops
    )


def _rate(row_key: str, rate: float, exact: bool, measured: bool) -> str:
    how = "measured" if measured and exact else "assumed" if exact else "estimated"
    return f"{row_key.split('/')[-1]} {how}, {rate:,.0f} img/s"


def _why(
    work: cost.Work,
    model: cost.ModelRates | None,
    loader: cost.LoaderRate | None,
    k_row: int,
    k_mem: int,
    memory: cost.Memory,
) -> str:
    """How `auto` chose: the loader against a member's rate, the K the rates were measured
    at, and the memory cap."""
    if model is None or loader is None:
        return "priced by multiply-adds ([cluster] throughput), without loading: K = 1"
    mean = 1 / float(np.mean(1 / work.rates))
    row = model.rows[0]
    steps = _rate(row.key, mean, bool(model.exact.all()), row.measured)
    if loader.row.inline:
        data = f"loading inside the step rates ({loader.row.name})"
    else:
        data = "loading " + _rate(
            loader.row.key, loader.images_per_s, loader.exact, loader.row.measured
        )
    if work.overlap and loader.row.inline:
        parts = [f"{data}; steps {steps} summed"]
    elif work.overlap:
        parts = [f"{data} keeps up from K = {cost.loader_keeps_up(work)}; steps {steps} summed"]
    else:
        share = work.data_seconds / work.cell_seconds(1)
        parts = [
            f"{data} is {share:.0%} of a cell alone; steps {steps}; each extra member "
            f"costs {work.member_overhead:.0%} more compute"
        ]
    if k_row > 1:
        parts.append(f"rates measured at K = {k_row}")
    how = "measured" if memory.measured else "estimated"
    parts.append(f"memory allows {k_mem} ({memory.per_member_gb:.3g} GiB per member, {how})")
    return "; ".join(parts)


def _estimated(
    model: cost.ModelRates | None, loader: cost.LoaderRate | None, device: Device
) -> str:
    if model is None or loader is None:
        return "steps priced by multiply-adds ([cluster] throughput)"
    parts = []
    if not model.exact.all():
        names = ", ".join(r.name for r in model.used())
        how = "no faster at fewer multiply-adds (launch-bound)"
        how = how if device.bound == "launch" else "scaled by multiply-adds"
        parts.append(f"steps estimated from {names}, {how}")
    elif not model.measured:
        parts.append("steps from assumed rows")
    if not loader.exact:
        parts.append(f"loading estimated from {loader.row.name}")
    elif not loader.row.measured:
        parts.append("loading from an assumed row")
    return "; ".join(parts)


@dataclass(frozen=True)
class Projection:
    """What every cell of a study costs on one device kind, from the table alone (no
    calibration by measured cells), in GPU-seconds."""

    kind: str
    graphs: bool  # some dataset's cohorts step as CUDA graphs
    cells: int
    cohorts: int
    compute_s: float  # the members' steps and evaluations
    exposed_s: float  # loading that compute does not hide
    startup_s: float  # CELL_OVERHEAD_S per cell (assumed)
    datasets: int
    estimated: tuple[tuple[str, str], ...]  # (dataset, what is not a measured row)
    assumed_sizes: tuple[str, ...]  # datasets whose image counts the registry does not know
    assumed_device: bool = False  # every row of the kind is assumed
    note: str = ""  # the kind's note in the table
    gpu: bool = True  # a GPU kind (else its days are one worker's)

    @property
    def seconds(self) -> float:
        return self.compute_s + self.exposed_s + self.startup_s

    @property
    def measured(self) -> bool:
        return not self.estimated


def project(
    study: Study, population: Population, *, kind: str | None = None, graphs: bool | None = None
) -> Projection:
    """Every cell of the study in cohorts on `kind` (default: the study's), with CUDA graphs
    as `graphs` says (default: as the study says)."""
    sums = np.zeros(3)  # compute, exposed loading, start-up
    cells = groups = 0
    pricings = [price(study, e, population, kind=kind, graphs=graphs) for e in study.datasets]
    items = list(range(study.settings.architectures))
    for entry, p in zip(study.datasets, pricings, strict=True):
        gpus, work = max(entry.cluster.gpus, 1), p.work
        for group in cost.cohorts(items, lambda _: 0, p.k):
            compute = work.combine(0.0, float(work.member_seconds(group).sum()), len(group))
            wall = work.cohort_seconds(group)
            start = CELL_OVERHEAD_S * len(group)
            sums += gpus * len(study.seeds) * np.array([compute, wall - compute, start])
            groups += len(study.seeds)
        cells += len(items) * len(study.seeds)
    table = load_table()
    own = pricings[0].kind if pricings else kind or table.default_gpu
    return Projection(
        kind=own,
        graphs=any(p.graphs for p in pricings),
        cells=cells,
        cohorts=groups,
        compute_s=float(sums[0]),
        exposed_s=float(sums[1]),
        startup_s=float(sums[2]),
        datasets=len(pricings),
        estimated=tuple((p.dataset, p.estimated) for p in pricings if not p.measured),
        assumed_sizes=tuple(p.dataset for p in pricings if p.assumed_sizes),
        assumed_device=not any(r.measured for r in table.rows if r.device == own),
        note=table.device(own).note,
        gpu=table.device(own).gpu,
    )


def projections(study: Study, population: Population) -> list[Projection]:
    """The study's own projection; without CUDA graphs when it uses them; then on each other
    GPU kind of the table when the study's is a GPU kind."""
    table = load_table()
    own = project(study, population)
    found = [own]
    if own.graphs:
        found.append(project(study, population, graphs=False))
    if table.device(own.kind).gpu:
        others = [k for k, d in table.devices.items() if d.gpu and k != own.kind]
        found += [project(study, population, kind=k) for k in others]
    return found


def format_cohorts(pricings: dict[str, Pricing], counts: dict[str, int]) -> list[str]:
    """The dry run's cohort lines: per dataset its K, cohorts to run and why."""
    if not pricings:
        return []
    first = next(iter(pricings.values()))
    lines = [f"cohorts on {first.kind} (cells trained in lockstep from one loader):"]
    lines.append(f"  {'dataset':<20} {'K':>3} {'cohorts':>8}  graphs  why")
    for name, p in pricings.items():
        graphs = "yes" if p.graphs else "no"
        lines.append(f"  {name:<20} {p.k:>3} {counts.get(name, 0):>8}  {graphs:<6}  {p.why}")
    return lines


def format_projection(found: Sequence[Projection]) -> list[str]:
    """The dry run's projection lines: GPU-days per device kind and what they rest on."""
    if not found:
        return []
    lines = [
        f"projection of all {found[0].cells:,} cells from the throughput table (no calibration):"
    ]
    for i, p in enumerate(found):
        lines.append("  " + _projection_line(p, i))
        lines.append("    " + _rests_on(p))
    return lines


def _projection_line(p: Projection, index: int) -> str:
    days = 86400.0
    stepping = "CUDA graphs" if p.graphs else "eager steps"
    plan = ", as planned" if index == 0 else ""
    unit = "GPU-days" if p.gpu else "days of one worker"
    return (
        f"{p.kind}, {stepping}{plan}: {p.seconds / days:,.1f} {unit} = steps "
        f"{p.compute_s / days:,.1f} + loading not hidden {p.exposed_s / days:,.1f} + start-up "
        f"{p.startup_s / days:,.1f} ({CELL_OVERHEAD_S:.0f} s per cell, assumed); "
        f"{p.cohorts:,} cohorts"
    )


def _rests_on(p: Projection) -> str:
    if p.measured:
        text = "rests on measured rows only: yes"
    elif p.assumed_device:
        text = f"rests on measured rows only: no, every {p.kind} row is assumed ({p.note})"
    else:
        reasons: dict[str, list[str]] = {}
        for dataset, why in p.estimated:
            reasons.setdefault(why, []).append(dataset)
        names = "; ".join(f"{why} for {', '.join(ds)}" for why, ds in reasons.items())
        measured = p.datasets - len(p.estimated)
        text = (
            f"rests on measured rows only: no ({measured} of {p.datasets} datasets on measured "
            f"rows; {names})"
        )
    if p.assumed_sizes:
        text += f"; image counts assumed for {', '.join(p.assumed_sizes)}"
    return text
