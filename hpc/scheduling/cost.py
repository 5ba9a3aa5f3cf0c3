"""What a study costs on a device kind, in cohorts: data once per cohort, compute per member.

Pure: the throughput table (hpc/scheduling/throughput.toml, rows marked measured or assumed) and the
cells go in, seconds and whether they rest on measured rows only come out. To be wired into
the planner later: `[cluster] gpu = KIND` names the device row set, `[cluster] cohort =
"auto" | N` gives `k` (auto: the K that `best_cohort` returns), and `launch --dry-run` prints
`CohortCost.seconds` per dataset next to the multiply-add estimate, with `measured`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

TABLE = Path(__file__).with_name("throughput.toml")
T = TypeVar("T")
SOURCES = ("measured", "assumed")


@dataclass(frozen=True)
class Row:
    device: str
    kind: str  # "loader" or "model"
    name: str
    images_per_s: float
    source: str  # "measured" or "assumed"
    date: str


@dataclass(frozen=True)
class Table:
    rows: dict[tuple[str, str, str], Row]  # (device, kind, name)
    overlap: dict[str, bool]  # device -> loading runs beside compute

    def row(self, device: str, kind: str, name: str) -> Row:
        key = (device, kind, name)
        if key not in self.rows:
            valid = sorted(f"{d}/{k}/{n}" for d, k, n in self.rows)
            raise ValueError(f"no throughput row {device}/{kind}/{name}; rows: {', '.join(valid)}")
        return self.rows[key]


@dataclass(frozen=True)
class CellWork:
    """One cell's training work: `images` image-steps (train images x epochs) of one model."""

    dataset: str
    seed: int
    model: str  # a model row's name, e.g. "paper-224"
    loader: str  # a loader row's name, e.g. "ffcv-jpeg-224"
    images: int


@dataclass(frozen=True)
class CohortCost:
    seconds: float
    data_seconds: float  # loading, counted once per cohort
    compute_seconds: float  # training steps, counted per member
    cohorts: int
    measured: bool  # every row used is a measured one


def parse_table(data: Mapping[str, Any]) -> Table:
    """A throughput table from its TOML content; a bad row names itself and the problem."""
    overlap = {name: bool(d.get("overlap", False)) for name, d in data.get("devices", {}).items()}
    rows: dict[tuple[str, str, str], Row] = {}
    for i, raw in enumerate(data.get("rows", [])):
        row = Row(*(raw[k] for k in ("device", "kind", "name", "images_per_s", "source", "date")))
        if row.source not in SOURCES or row.kind not in ("loader", "model"):
            raise ValueError(
                f"throughput row {i}: source must be one of {SOURCES}, kind loader|model"
            )
        if row.device not in overlap or not row.images_per_s > 0:
            raise ValueError(f"throughput row {i}: unknown device {row.device!r} or rate <= 0")
        rows[(row.device, row.kind, row.name)] = row
    return Table(rows, overlap)


def load_table(path: Path = TABLE) -> Table:
    return parse_table(tomllib.loads(Path(path).read_text()))


def cohorts(items: Iterable[T], key: Callable[[T], Hashable], k: int) -> list[list[T]]:
    """Items in cohorts of one key, at most `k` each, in the given order: how the worker
    groups a chunk's cells (key: the seed) and how cells are priced (below)."""
    if k < 1:
        raise ValueError(f"cohort size must be >= 1, got {k}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [g[i : i + k] for g in groups.values() for i in range(0, len(g), k)]


def cohorts_of(cells: Iterable[CellWork], k: int) -> list[list[CellWork]]:
    """Cells in cohorts of one (dataset, seed, loader), at most `k` each, in the given order."""
    return cohorts(cells, lambda c: (c.dataset, c.seed, c.loader), k)


def cohort_cost(cells: Iterable[CellWork], k: int, device: str, table: Table) -> CohortCost:
    """Seconds to train `cells` in cohorts of up to `k` on one `device`: per cohort, loading its
    images once and stepping each member; beside each other when the device overlaps them."""
    data = compute = seconds = 0.0
    measured = True
    groups = cohorts_of(cells, k)
    for group in groups:
        loader = table.row(device, "loader", group[0].loader)
        models = [table.row(device, "model", c.model) for c in group]
        load_s = max(c.images for c in group) / loader.images_per_s
        step_s = sum(c.images / m.images_per_s for c, m in zip(group, models, strict=True))
        data, compute = data + load_s, compute + step_s
        overlap = table.overlap.get(device, False)
        seconds += max(load_s, step_s) if overlap else load_s + step_s
        measured = measured and all(r.source == "measured" for r in (loader, *models))
    return CohortCost(seconds, data, compute, len(groups), measured and not math.isnan(seconds))


def best_cohort(cells: list[CellWork], device: str, table: Table, k_max: int = 16) -> int:
    """The smallest K in 1..k_max whose cost is within 1 % of the cheapest (`cohort = "auto"`)."""
    costs = {k: cohort_cost(cells, k, device, table).seconds for k in range(1, k_max + 1)}
    cheapest = min(costs.values())
    return min(k for k, s in costs.items() if s <= 1.01 * cheapest)
