"""What cells cost on a device kind, in cohorts: data once per cohort, compute per member.

Pure arithmetic over the throughput table (hpc/study/throughput.py) and numbers given in:
which row prices an architecture's steps or a dataset's loading (or how it is estimated where
no row stands for it), the seconds of a cohort, the largest cohort memory allows, and the K
that `[cluster] cohort = "auto"` picks. hpc/scheduling/pricing.py feeds it a study.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from hpc.study.throughput import Device, Row, Table

T = TypeVar("T")
# An evaluation pass costs a third of a training step per image (forward only).
EVAL_SHARE = 1 / 3
# `auto` picks a cohort within 1 % of the cheapest, and no larger than the largest measured.
AUTO_TOLERANCE = 0.01
AUTO_MAX = 16
# A GPU keeps this much for its context and cuDNN's workspaces; a cohort fills 90 % of the rest.
RESERVE_GB = 1.0
FILL = 0.9
# Per member: fp32 weights, gradients and momentum, and the autocast copies (16 bytes per
# parameter); per activation and image, the saved tensor and its gradient. Fits 14 of the 15
# paper-224 solos measured on the H200 within 15 % (one needed 1.6x: cuDNN's workspace).
STATE_BYTES_PER_PARAM = 16
ACT_COPIES = 2


def cohorts(items: Iterable[T], key: Callable[[T], Hashable], k: int) -> list[list[T]]:
    """Items in cohorts of one key, at most `k` each, in the given order: how the worker
    groups a chunk's cells (key: the seed) and how the planner groups them."""
    if k < 1:
        raise ValueError(f"cohort size must be >= 1, got {k}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [g[i : i + k] for g in groups.values() for i in range(0, len(g), k)]


@dataclass(frozen=True)
class ModelRates:
    """Per architecture: image-steps per second (summed over a cohort's members), the row it
    comes from, and whether that row stands for it (False: estimated from the row)."""

    images_per_s: np.ndarray
    rows: tuple[Row, ...]  # per architecture
    exact: np.ndarray  # bool per architecture

    @property
    def measured(self) -> bool:
        return bool(self.exact.all()) and all(r.measured for r in self.rows)

    def used(self) -> list[Row]:
        return list({r.key: r for r in self.rows}.values())


def _scaled(rate: float, ratio: np.ndarray, device: Device) -> np.ndarray:
    """A row's rate for inputs of `ratio` x the row's multiply-adds per image: slower in
    proportion on a compute-bound device; on a launch-bound one never faster than measured."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if device.bound == "launch":
        ratio = np.minimum(ratio, 1.0)
    return rate * ratio


def model_rates(
    table: Table,
    device: str,
    resolution: int,
    flops: np.ndarray,
    flops_at: Callable[[int], np.ndarray],
    graphs: bool = False,
) -> ModelRates:
    """The step rate of each architecture (its multiply-adds per image `flops` at the
    dataset's `resolution`; `flops_at(r)` gives them at resolution r): a row at this
    resolution that stands for it; else a row that stands for it at its own resolution,
    scaled by the device's bound; else the row nearest in multiply-adds, scaled."""
    dev = table.device(device)
    rows = [r for r in table.of(device, "model") if r.cuda_graphs == graphs]
    rows = rows or [r for r in table.of(device, "model") if not r.cuda_graphs]
    if not rows:
        raise ValueError(f"the throughput table has no model row for {device}")
    flops = np.maximum(np.asarray(flops, dtype=np.float64), 1.0)
    rate = np.full(len(flops), np.nan)
    chosen = np.full(len(flops), -1)

    def assign(i: int, mask: np.ndarray, row_flops: np.ndarray | float) -> None:
        mask = mask & np.isnan(rate)
        ratio = np.broadcast_to(row_flops / flops, flops.shape)[mask]
        rate[mask] = _scaled(rows[i].images_per_s, ratio, dev)
        chosen[mask] = i

    for i, row in enumerate(rows):  # a row at this resolution that stands for it
        if row.resolution == resolution:
            assign(i, row.holds(flops), flops)
    exact = ~np.isnan(rate)
    # One that stands for it at its own resolution, the nearest resolution first.
    for i in sorted(range(len(rows)), key=lambda i: abs(math.log(rows[i].resolution / resolution))):
        row = rows[i]
        if row.resolution != resolution:
            own = np.asarray(flops_at(row.resolution), dtype=np.float64)
            assign(i, row.holds(own), own)
    nearest = _nearest(flops, rows)
    for i, row in enumerate(rows):
        assign(i, nearest == i, row.mid_flops)
    return ModelRates(rate, tuple(rows[i] for i in chosen), exact)


def _nearest(flops: np.ndarray, rows: Sequence[Row]) -> np.ndarray:
    """Index of the row nearest each architecture in log multiply-adds per image."""
    mids = np.log([r.mid_flops for r in rows])
    return np.abs(np.log(np.maximum(flops, 1.0))[:, None] - mids[None, :]).argmin(axis=1)


@dataclass(frozen=True)
class LoaderRate:
    images_per_s: float  # inf: inside the model rows' rates
    row: Row
    exact: bool  # the row stands for this backend, encoding and resolution

    @property
    def measured(self) -> bool:
        return self.exact and self.row.measured


def loader_rate(
    table: Table, device: str, backend: str, encoding: str, resolution: int
) -> LoaderRate:
    """The training loader's rate for a dataset: the row of its backend, encoding (FFCV) and
    resolution; else the nearest resolution of the same backend (the same encoding first),
    unscaled for FFCV (decoding the stored image dominates) and by pixels for the memory
    backend (its crops are the work)."""
    table.device(device)
    rows = [r for r in table.of(device, "loader") if r.backend == backend]
    if not rows:
        valid = ", ".join(r.key for r in table.of(device, "loader"))
        raise ValueError(f"no {backend} loader row for {device}; its loader rows: {valid}")
    same = [r for r in rows if backend != "ffcv" or r.encoding == encoding] or rows
    row = min(same, key=lambda r: (abs(math.log(r.resolution / resolution)), r.resolution))
    exact = row.resolution == resolution and (backend != "ffcv" or row.encoding == encoding)
    if row.inline:
        return LoaderRate(math.inf, row, exact)
    scale = (row.resolution / resolution) ** 2 if backend == "memory" else 1.0
    return LoaderRate(row.images_per_s * scale, row, exact)


@dataclass(frozen=True)
class Work:
    """One dataset's cells on one device kind: images per cell and the rates that price them."""

    train_images: int
    test_images: int
    epochs: int
    rates: np.ndarray  # image-steps per second, per architecture id
    loader: float  # training images per second; inf when loading is inside the rates
    overlap: bool
    member_overhead: float

    def member_seconds(self, arch_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Each member's steps: training and a third of a step per test image, every epoch."""
        images = self.epochs * (self.train_images + EVAL_SHARE * self.test_images)
        return images / self.rates[np.asarray(arch_ids, dtype=np.int64)]

    @property
    def data_seconds(self) -> float:
        """Loading a cohort's training and test images, once for all its members."""
        return self.epochs * (self.train_images + self.test_images) / self.loader

    def combine(self, data: float, compute: Any, k: Any) -> Any:
        """A cohort's wall seconds from its loading and its members' compute (scalars, or
        arrays of cohorts with `k` members each)."""
        compute = compute * (1 + self.member_overhead * (np.asarray(k) - 1))
        wall = np.maximum(data, compute) if self.overlap else data + compute
        return float(wall) if np.ndim(wall) == 0 else wall

    def cohort_seconds(self, arch_ids: Sequence[int]) -> float:
        """A cohort's wall seconds, start-up of its members aside."""
        compute = float(self.member_seconds(arch_ids).sum())
        return self.combine(self.data_seconds, compute, len(arch_ids))

    def cell_seconds(self, k: int) -> float:
        """Seconds per cell of a cohort of `k` average members."""
        mean = float(self.member_seconds(np.arange(len(self.rates))).mean())
        return self.combine(self.data_seconds, k * mean, k) / k


def choose_cohort(work: Work, k_cap: int, k_row: int = 1) -> int:
    """The K of `cohort = "auto"`: the smallest within 1 % of the cheapest per cell up to
    `k_cap`, raised to `k_row` (the K its model rates were measured at) when that costs no
    more, since the rates are known to hold there."""
    k_cap = max(1, k_cap)
    costs = {k: work.cell_seconds(k) for k in range(1, k_cap + 1)}
    cheapest = min(costs.values())
    k = min(k for k, s in costs.items() if s <= (1 + AUTO_TOLERANCE) * cheapest)
    if k < k_row <= k_cap and costs[k_row] <= (1 + AUTO_TOLERANCE) * cheapest:
        k = k_row
    return k


def loader_keeps_up(work: Work) -> int:
    """The smallest K whose average members' steps take at least as long as loading their
    cohort's images: from there on loading is hidden on a device that overlaps the two."""
    mean = float(work.member_seconds(np.arange(len(work.rates))).mean())
    return max(1, math.ceil(work.data_seconds / mean - 1e-9))


@dataclass(frozen=True)
class Memory:
    per_member_gb: float  # state, plus activations where each member keeps its own
    shared_gb: float  # activations of one member at a time (eager)
    measured: bool


def member_memory(
    params: np.ndarray,
    acts: np.ndarray,
    batch: int,
    element_bytes: int,
    graphs: bool,
    row_gb: float = 0.0,
) -> Memory:
    """What each member of a cohort holds: a row's figure when it has one; else the largest
    architecture's state, and its activations at `batch` shared (eager: one member's at a
    time) or per member (CUDA graphs keep each member's pool)."""
    if row_gb > 0:
        return Memory(row_gb, 0.0, True)
    state = float(np.max(params)) * STATE_BYTES_PER_PARAM / 2**30
    act = float(np.max(acts)) * batch * element_bytes * ACT_COPIES / 2**30
    return Memory(state + act, 0.0, False) if graphs else Memory(state, act, False)


def memory_cap(device: Device, memory: Memory, limit_gb: float | None = None) -> int:
    """The largest cohort that fits in the device's memory (and `limit_gb`, a CPU task's)."""
    total = min(device.memory_gb, limit_gb) if limit_gb else device.memory_gb
    usable = FILL * total - (RESERVE_GB if device.gpu else 0.0) - memory.shared_gb
    return max(1, math.floor(usable / memory.per_member_gb))
