"""Rejection sampling of distinct architectures from a design space under complexity
constraints: seeded, prefix-stable, and vectorised over blocks of draws."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from anynet.arch import Architecture, adjust_widths
from anynet.complexity import complexity_batch
from anynet.spaces import DesignSpace, get_space

BLOCK = 4096
"""Draws per block. Fixed: the stream of blocks, hence the accepted list, must not depend
on how many architectures are asked for."""

Range = tuple[float, float]


@dataclass(frozen=True)
class Sample:
    """One accepted architecture: ``arch`` is the adjusted one (built and counted),
    ``sampled`` the raw draw before the compatibility rule, ``draw`` its index in the stream."""

    arch: Architecture
    sampled: Architecture
    draw: int


def sample(
    space: DesignSpace | str,
    n: int,
    *,
    seed: int = 0,
    resolution: int = 224,
    num_classes: int = 1000,
    flops: Range | None = None,
    params: Range | None = None,
    acts: Range | None = None,
    max_draws: int | None = None,
    progress: bool = False,
) -> list[Sample]:
    """``n`` distinct architectures drawn uniformly from ``space`` restricted to the
    inclusive (lo, hi) ranges of flops, params and acts at ``resolution``.

    The same seed gives the same list on any machine, and asking for more returns the
    same list extended. Raises ValueError when ``max_draws`` draws (default
    max(2,000,000, 1,000 n)) do not yield ``n`` distinct architectures.
    """
    if isinstance(space, str):
        space = get_space(space)
    limits = _check_args(n, seed, resolution, num_classes, flops, params, acts, max_draws)
    if max_draws is None:
        max_draws = max(2_000_000, 1_000 * n)
    rng = np.random.Generator(np.random.PCG64(seed))
    found: dict[Architecture, Sample] = {}
    nearest = _Nearest(limits)
    bar = _progress_bar(n) if progress else None
    start = 0
    try:
        while len(found) < n and start < max_draws:
            block = space.draw(rng, BLOCK)
            size = min(BLOCK, max_draws - start)
            _accept(
                space, block, size, start, resolution, num_classes, limits, nearest, found, n, bar
            )
            start += BLOCK
    finally:
        if bar is not None:
            bar.close()
    if len(found) < n:
        raise ValueError(_shortfall(space, n, len(found), min(start, max_draws), nearest))
    return list(found.values())


def _accept(space, block, size, start, resolution, num_classes, limits, nearest, found, n, bar):
    idx = np.flatnonzero(block.valid[:size])
    d, b = block.depths[idx], block.bottleneck_ratios[idx]
    w, g = adjust_widths(block.widths[idx], b, block.group_widths[idx])
    inside = space.admits(d, w, b, g)
    idx, d, w, b, g = idx[inside], d[inside], w[inside], b[inside], g[inside]
    nearest.valid += len(idx)
    if not len(idx):
        return
    cx = complexity_batch(
        d,
        w,
        b,
        g,
        stem=space.stem,
        stem_width=space.stem_width,
        se_ratio=space.se_ratio,
        resolution=resolution,
        num_classes=num_classes,
    )
    ok = np.ones(len(idx), dtype=bool)
    for values, (lo, hi) in zip(cx, limits.values(), strict=True):
        ok &= (values >= lo) & (values <= hi)
    if not ok.all():
        nearest.update(cx, ~ok)
    common = {"stem_width": space.stem_width, "stem": space.stem, "se_ratio": space.se_ratio}
    rows = idx[ok].tolist()
    # Python tuples of Python numbers: the records' own form, so building them is cheap.
    adjusted = zip(*(map(tuple, a[ok].tolist()) for a in (d, w, b, g)), strict=True)
    for row, fields in zip(rows, adjusted, strict=True):
        arch = Architecture(*fields, **common)
        if arch in found:
            continue
        raw = Architecture.raw(
            depths=tuple(block.depths[row].tolist()),
            widths=tuple(block.widths[row].tolist()),
            bottleneck_ratios=tuple(block.bottleneck_ratios[row].tolist()),
            group_widths=tuple(block.group_widths[row].tolist()),
            **common,
        )
        found[arch] = Sample(arch=arch, sampled=raw, draw=start + row)
        if bar is not None:
            bar.update(1)
        if len(found) == n:
            return


class _Nearest:
    """The rejected draw closest to the ranges (sum of log-distances), for the error."""

    def __init__(self, limits: dict[str, Range]) -> None:
        self.limits = limits
        self.valid = 0
        self.best: tuple[float, dict[str, int]] | None = None

    def update(self, cx: tuple[np.ndarray, ...], rejected: np.ndarray) -> None:
        dist = np.zeros(int(rejected.sum()))
        for values, (lo, hi) in zip(cx, self.limits.values(), strict=True):
            if math.isfinite(hi):
                v = np.maximum(values[rejected].astype(np.float64), 1.0)
                dist += np.maximum(0.0, np.log(max(lo, 1.0) / v)) + np.maximum(
                    0.0, np.log(v / max(hi, 1.0))
                )
        i = int(np.argmin(dist))
        if self.best is None or dist[i] < self.best[0]:
            keys = ("flops", "params", "acts")
            self.best = (
                float(dist[i]),
                {k: int(c[rejected][i]) for k, c in zip(keys, cx, strict=True)},
            )


def _check_args(
    n: int,
    seed: int,
    resolution: int,
    num_classes: int,
    flops: Range | None,
    params: Range | None,
    acts: Range | None,
    max_draws: int | None,
) -> dict[str, Range]:
    """sample()'s arguments checked; the (lo, hi) limit of each measure, infinite if none."""
    for key, value, low in (
        ("n", n, 0),
        ("resolution", resolution, 1),
        ("num_classes", num_classes, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    if max_draws is not None and (not isinstance(max_draws, (int, np.integer)) or max_draws < 1):
        raise ValueError(f"max_draws must be a positive integer, got {max_draws!r}")
    limits: dict[str, Range] = {}
    for key, rng in (("flops", flops), ("params", params), ("acts", acts)):
        if rng is None:
            limits[key] = (-math.inf, math.inf)
            continue
        try:
            lo, hi = (float(x) for x in rng)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a (lo, hi) pair of numbers, got {rng!r}") from None
        if not 0 <= lo <= hi:
            raise ValueError(f"{key} range must satisfy 0 <= lo <= hi, got ({lo:g}, {hi:g})")
        limits[key] = (lo, hi)
    return limits


def _shortfall(space, n, got, draws, nearest: _Nearest) -> str:
    head = (
        f"design space {space.name!r}: found {got} distinct architecture(s) of the {n} "
        f"asked for in {draws:,} draws"
    )
    ranges = {k: v for k, v in nearest.limits.items() if math.isfinite(v[1])}
    if nearest.valid == 0:
        return head + "; no draw was an architecture of the space (check its overrides)"
    if nearest.best is None:
        return head + "; the constrained space holds fewer distinct architectures than asked for"
    cx = nearest.best[1]
    parts = [f"{k} {cx[k]:,} vs [{lo:,.0f}, {hi:,.0f}]" for k, (lo, hi) in ranges.items()]
    return (
        head
        + "; the constrained set looks empty or tiny. Nearest draw: "
        + ", ".join(parts)
        + ". Widen the ranges or the space, or raise max_draws."
    )


def _progress_bar(n: int) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type stubs

    return tqdm(total=n, desc="sampling architectures", unit="arch")
