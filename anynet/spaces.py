"""Design spaces AnyNetX_A..E and RegNetX/Y: their published ranges, and vectorised draws of
raw architectures from them with pycls's distributions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from anynet.arch import STEMS, Architecture

SPACE_NAMES = (
    "anynetx_a",
    "anynetx_b",
    "anynetx_c",
    "anynetx_d",
    "anynetx_e",
    "regnetx",
    "regnety",
)


@dataclass(frozen=True)
class Draws:
    """A batch of raw draws as (B, stages) arrays; ``valid`` marks the rows that are
    architectures at all (a RegNet draw can yield the wrong number of stages)."""

    depths: np.ndarray
    widths: np.ndarray
    bottleneck_ratios: np.ndarray
    group_widths: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class AnyNetSpace:
    """AnyNetX: per stage, depth log-uniform in [min_depth, max_depth], width log-uniform in
    [min_width, max_width] in steps of width_step, bottleneck ratio and group width uniform
    over their values; B..E add the shared and non-decreasing constraints."""

    name: str
    stages: int = 4
    min_depth: int = 1
    max_depth: int = 16
    min_width: int = 8
    max_width: int = 1024
    width_step: int = 8
    bottleneck_ratios: tuple[float, ...] = (1.0, 2.0, 4.0)
    group_widths: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    stem: str = "imagenet"
    stem_width: int = 32
    se_ratio: float = 0.0
    shared_bottleneck: bool = False
    shared_group: bool = False
    increasing_widths: bool = False
    increasing_depths: bool = False

    def __post_init__(self) -> None:
        _coerce(self)
        _check_common(self)
        _check_range("depth", self.min_depth, self.max_depth, 1, 1)
        if self.width_step < 1:
            raise ValueError(f"width_step must be >= 1, got {self.width_step}")
        _check_range("width", self.min_width, self.max_width, self.width_step, self.width_step)
        if any(g < 1 for g in self.group_widths) or not self.group_widths:
            raise ValueError(f"group_widths must be positive integers, got {self.group_widths}")

    def draw(self, rng: np.random.Generator, size: int) -> Draws:
        """``size`` raw draws from one call to ``rng.random`` (so a stream of blocks is the
        same whatever is done with the draws)."""
        s = self.stages
        u = rng.random((size, 4 * s))
        dv, dp = _log_uniform(self.min_depth, self.max_depth, 1)
        wv, wp = _log_uniform(self.min_width, self.max_width, self.width_step)
        pick = _monotone if self.increasing_depths else _choose
        depths = dv[pick(u[:, 0:s], dp)]
        pick = _monotone if self.increasing_widths else _choose
        widths = wv[pick(u[:, s : 2 * s], wp)]
        # A shared value drawn once is A conditioned on all stages drawing the same value,
        # because the stages' values are independent and uniform.
        bu = u[:, [2 * s] * s] if self.shared_bottleneck else u[:, 2 * s : 3 * s]
        gu = u[:, [3 * s] * s] if self.shared_group else u[:, 3 * s : 4 * s]
        b = np.asarray(self.bottleneck_ratios, dtype=np.float64)
        g = np.asarray(self.group_widths, dtype=np.int64)
        ratios = b[_choose(bu, _uniform(len(b)))]
        groups = g[_choose(gu, _uniform(len(g)))]
        return Draws(depths, widths, ratios, groups, np.ones(size, dtype=bool))

    def admits(
        self, depths: np.ndarray, widths: np.ndarray, ratios: np.ndarray, groups: np.ndarray
    ) -> np.ndarray:
        """Which adjusted (B, stages) architectures lie in this space. A group width capped
        at its bottleneck width by the compatibility rule counts as the drawn one."""
        ok = (depths.shape[1] == self.stages) & np.ones(depths.shape[0], dtype=bool)
        ok &= ((depths >= self.min_depth) & (depths <= self.max_depth)).all(axis=1)
        ok &= ((widths >= self.min_width) & (widths <= self.max_width)).all(axis=1)
        ok &= (widths % self.width_step == 0).all(axis=1)
        ok &= np.isin(ratios, self.bottleneck_ratios).all(axis=1)
        capped = groups == np.round(widths / ratios).astype(np.int64)
        ok &= (np.isin(groups, self.group_widths) | capped).all(axis=1)
        if self.shared_bottleneck:
            ok &= (ratios == ratios[:, :1]).all(axis=1)
        if self.shared_group:
            top = groups.max(axis=1, keepdims=True)
            ok &= ((groups == top) | capped).all(axis=1)
        if self.increasing_widths:
            ok &= (np.diff(widths, axis=1) >= 0).all(axis=1)
        if self.increasing_depths:
            ok &= (np.diff(depths, axis=1) >= 0).all(axis=1)
        return ok

    def contains(self, arch: Architecture) -> bool:
        """Whether ``arch`` (an adjusted architecture) lies in this space."""
        return _contains(self, arch)


@dataclass(frozen=True)
class RegNetSpace:
    """RegNet: total depth uniform, w_0, w_a, w_m log-uniform and group width
    power-of-2-or-multiple-of-8 as pycls's regnet_sampler; stage widths come from the
    quantised linear rule, and draws that do not yield exactly ``stages`` stages are invalid."""

    name: str
    stages: int = 4
    min_depth: int = 12
    max_depth: int = 28
    min_w0: int = 8
    max_w0: int = 256
    min_wa: float = 8.0
    max_wa: float = 256.0
    min_wm: float = 2.0
    max_wm: float = 3.0
    min_group_width: int = 1
    max_group_width: int = 32
    bottleneck_ratios: tuple[float, ...] = (1.0,)
    stem: str = "imagenet"
    stem_width: int = 32
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        _coerce(self)
        _check_common(self)
        _check_range("depth", self.min_depth, self.max_depth, 1, 1)
        _check_range("w0", self.min_w0, self.max_w0, 8, 8)
        _check_range("wa", self.min_wa, self.max_wa, 0.1, 0.1)
        _check_range("wm", self.min_wm, self.max_wm, 0.001, 0.001)
        if self.min_wm <= 1:
            raise ValueError(f"min_wm must be > 1, got {self.min_wm}")
        lo, hi = self.min_group_width, self.max_group_width
        if not (1 <= lo <= hi) or not _power_of_2(lo) or not _power_of_2(hi):
            raise ValueError(
                f"min_group_width and max_group_width must be powers of 2 with min <= max, "
                f"got {lo} and {hi}"
            )

    def draw(self, rng: np.random.Generator, size: int) -> Draws:
        """``size`` raw draws (see ``AnyNetSpace.draw``)."""
        u = rng.random((size, 6))
        total = np.arange(self.min_depth, self.max_depth + 1)
        total = total[_choose(u[:, 0], _uniform(len(total)))]
        k, p = _log_uniform(self.min_w0, self.max_w0, 8)
        w0 = k[_choose(u[:, 1], p)]
        k, p = _log_uniform(round(self.min_wa * 10), round(self.max_wa * 10), 1)
        wa = k[_choose(u[:, 2], p)] / 10  # k / 10 is the double nearest to k * 0.1
        k, p = _log_uniform(round(self.min_wm * 1000), round(self.max_wm * 1000), 1)
        wm = k[_choose(u[:, 3], p)] / 1000
        k, p = _power2_or_log_uniform(self.min_group_width, self.max_group_width, 8)
        groups = k[_choose(u[:, 4], p)]
        b = np.asarray(self.bottleneck_ratios, dtype=np.float64)
        ratios = b[_choose(u[:, 5], _uniform(len(b)))]
        depths, widths, valid = _regnet_stages(w0, wa, wm, total, self.stages, self.max_depth)
        s = self.stages
        return Draws(
            depths,
            widths,
            np.repeat(ratios[:, None], s, 1),
            np.repeat(groups[:, None], s, 1),
            valid,
        )

    def admits(
        self, depths: np.ndarray, widths: np.ndarray, ratios: np.ndarray, groups: np.ndarray
    ) -> np.ndarray:
        """Which adjusted (B, stages) architectures lie in this space."""
        total = depths.sum(axis=1)
        ok = (depths.shape[1] == self.stages) & (depths >= 1).all(axis=1)
        ok &= (total >= self.min_depth) & (total <= self.max_depth)
        return ok & np.isin(ratios, self.bottleneck_ratios).all(axis=1)

    def contains(self, arch: Architecture) -> bool:
        """Whether ``arch`` (an adjusted architecture) lies in this space."""
        return _contains(self, arch)


DesignSpace = AnyNetSpace | RegNetSpace

_IDENTITY = ("name", "shared_bottleneck", "shared_group", "increasing_widths", "increasing_depths")
_ANYNET: dict[str, dict[str, Any]] = {
    "anynetx_a": {},
    "anynetx_b": {"shared_bottleneck": True},
    "anynetx_c": {"shared_bottleneck": True, "shared_group": True},
    "anynetx_d": {"shared_bottleneck": True, "shared_group": True, "increasing_widths": True},
    "anynetx_e": {
        "shared_bottleneck": True,
        "shared_group": True,
        "increasing_widths": True,
        "increasing_depths": True,
    },
}


def get_space(name: str, **overrides: Any) -> DesignSpace:
    """The design space ``name`` (one of SPACE_NAMES) with any of its ranges overridden,
    e.g. ``get_space("anynetx_a", max_depth=3, max_width=128, stem="small")``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in SPACE_NAMES:
        raise ValueError(f"unknown design space {name!r}; valid names are {list(SPACE_NAMES)}")
    if key in _ANYNET:
        base: DesignSpace = AnyNetSpace(name=key, **_ANYNET[key])
    else:
        base = RegNetSpace(name=key, se_ratio=0.25 if key == "regnety" else 0.0)
    valid = override_keys(key)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for design space {key!r}; valid: {valid}")
    return dataclasses.replace(base, **overrides)


def override_keys(name: str) -> list[str]:
    """The options ``get_space(name, ...)`` accepts."""
    cls = AnyNetSpace if name.lower().startswith("anynet") else RegNetSpace
    return [f.name for f in dataclasses.fields(cls) if f.name not in _IDENTITY]


def regnet_stages(
    w0: int, wa: float, wm: float, depth: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-stage (depths, widths) of the RegNet with these parameters, as pycls's
    ``generate_regnet`` (block widths w_0 + w_a*j quantised to w_0*w_m^k, multiples of 8)."""
    if not (w0 > 0 and w0 % 8 == 0 and wa >= 0 and wm > 1 and depth >= 1):
        raise ValueError(
            f"need w0 > 0 divisible by 8, wa >= 0, wm > 1, depth >= 1; got {w0}, {wa}, {wm}, {depth}"
        )
    ws = _regnet_blocks(
        np.array([w0]), np.array([float(wa)]), np.array([float(wm)]), np.array([depth]), depth
    )[0][0]
    widths, counts = np.unique(ws, return_counts=True)
    return tuple(int(c) for c in counts), tuple(int(w) for w in widths)


def _regnet_blocks(
    w0: np.ndarray, wa: np.ndarray, wm: np.ndarray, depth: np.ndarray, max_depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block widths (B, max_depth), blocks past each depth masked, and the number of
    stages the quantisation allows (pycls's total_stages)."""
    j = np.arange(max_depth)
    mask = j[None, :] < depth[:, None]
    cont = j[None, :] * wa[:, None] + w0[:, None]
    ks = np.round(np.log(cont / w0[:, None]) / np.log(wm)[:, None])
    ws = np.round(w0[:, None] * np.power(wm[:, None], ks) / 8).astype(np.int64) * 8
    ws = np.where(mask, ws, 0)
    total_stages = np.where(mask, ks, 0).max(axis=1).astype(np.int64) + 1
    return ws, mask, total_stages


def _regnet_stages(w0, wa, wm, depth, stages: int, max_depth: int):
    ws, mask, total_stages = _regnet_blocks(w0, wa, wm, depth, max_depth)
    change = (ws[:, 1:] != ws[:, :-1]) & mask[:, 1:]
    # pycls keeps a RegNet only when every stage its quantisation allows is present.
    valid = (change.sum(axis=1) + 1 == stages) & (total_stages == stages)
    depths = np.ones((len(depth), stages), dtype=np.int64)
    widths = np.full((len(depth), stages), 8, dtype=np.int64)
    rows = np.flatnonzero(valid)
    stage = np.zeros((len(rows), max_depth), dtype=np.int64)
    stage[:, 1:] = np.cumsum(change[rows], axis=1)
    in_depth = mask[rows]
    counts = np.stack([((stage == s) & in_depth).sum(axis=1) for s in range(stages)], axis=1)
    starts = np.cumsum(counts, axis=1) - counts
    depths[rows] = counts
    widths[rows] = np.take_along_axis(ws[rows], starts, axis=1)
    return depths, widths, valid


def _contains(space: DesignSpace, arch: Architecture) -> bool:
    if (arch.stem, arch.stem_width, arch.se_ratio) != (
        space.stem,
        space.stem_width,
        space.se_ratio,
    ):
        return False
    if arch.num_stages != space.stages:
        return False
    rows = [
        np.array([v]) for v in (arch.depths, arch.widths, arch.bottleneck_ratios, arch.group_widths)
    ]
    return bool(space.admits(*rows)[0])


@lru_cache(maxsize=64)
def _log_uniform(low: int, high: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Values low..high in steps of q with pycls's log_uniform probabilities: f log-uniform
    on (low - min(q, low/2), high], rounded up to a multiple of q. Scalar math.log keeps
    the table identical on every machine."""
    values = np.arange(low, high + 1, q, dtype=np.int64)
    floor = low - min(q, low / 2)
    edges = [floor] + [float(v) for v in values]
    span = math.log(high) - math.log(floor)
    probs = np.array(
        [(math.log(b) - math.log(a)) / span for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )
    return values, probs


@lru_cache(maxsize=16)
def _power2_or_log_uniform(low: int, high: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """pycls's power2_or_log_uniform: a uniform power of 2, replaced by a log-uniform
    multiple of q when it is at least q."""
    powers = [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]
    probs: dict[int, float] = {}
    for p in powers:
        if p < q:
            probs[p] = probs.get(p, 0.0) + 1 / len(powers)
    big = sum(p >= q for p in powers) / len(powers)
    if big:
        values, p_log = _log_uniform(max(low, q), high, min(high, q))
        for v, p in zip(values.tolist(), p_log.tolist(), strict=True):
            probs[v] = probs.get(v, 0.0) + big * p
    keys = sorted(probs)
    return np.array(keys, dtype=np.int64), np.array([probs[k] for k in keys])


def _uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def _choose(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices drawn with ``probs`` by inverting the CDF at the uniforms ``u``."""
    cdf = np.cumsum(probs)
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(probs) - 1)


def _monotone(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(B, S) indices distributed as S independent draws with ``probs`` conditioned on being
    non-decreasing: exactly what rejection sampling gives, without the rejections."""
    n, s = u.shape
    k = len(probs)
    # weights[t][j]: weight of value j at stage t times that of every non-decreasing
    # continuation from j, so stage t is drawn from its exact conditional distribution.
    weights = [np.empty(0)] * s
    tail = np.ones(k)
    for t in reversed(range(s)):
        weights[t] = probs * tail
        tail = np.cumsum(weights[t][::-1])[::-1]
    out = np.empty((n, s), dtype=np.int64)
    low = np.zeros(n, dtype=np.int64)
    for t in range(s):
        cum = np.concatenate(([0.0], np.cumsum(weights[t])))
        x = cum[low] + u[:, t] * (cum[-1] - cum[low])
        low = np.clip(np.searchsorted(cum, x, side="right") - 1, low, k - 1)
        out[:, t] = low
    return out


def _power_of_2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


def _coerce(space: DesignSpace) -> None:
    # TOML and the CLI give lists and ints; the record keeps tuples and the declared types.
    for f in dataclasses.fields(space):
        value = getattr(space, f.name)
        if f.type.startswith("tuple"):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                value = (value,)
            kind = float if "float" in f.type else int
            value = tuple(_number(f.name, v, kind) for v in value)
        elif f.type in ("int", "float"):
            value = _number(f.name, value, int if f.type == "int" else float)
        elif f.type == "str" and not isinstance(value, str):
            raise ValueError(f"{f.name} must be a string, got {value!r}")
        object.__setattr__(space, f.name, value)


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return kind(value)


def _check_common(space: DesignSpace) -> None:
    if space.stages < 1:
        raise ValueError(f"stages must be >= 1, got {space.stages}")
    if space.stem not in STEMS:
        raise ValueError(f"unknown stem {space.stem!r}; valid stems are {list(STEMS)}")
    if space.stem_width < 1:
        raise ValueError(f"stem_width must be >= 1, got {space.stem_width}")
    if not space.se_ratio >= 0:
        raise ValueError(f"se_ratio must be >= 0, got {space.se_ratio}")
    b = space.bottleneck_ratios
    if not b or any(not x > 0 or (x < 1 and not (1 / x).is_integer()) for x in b):
        raise ValueError(
            f"bottleneck_ratios must be positive, and 1/b an integer when b < 1; got {b}"
        )


def _check_range(what: str, low: float, high: float, step: float, minimum: float) -> None:
    if not minimum <= low <= high:
        raise ValueError(
            f"need {minimum} <= min_{what} <= max_{what}, got min_{what}={low}, max_{what}={high}"
        )
    for key, v in ((f"min_{what}", low), (f"max_{what}", high)):
        if abs(v / step - round(v / step)) > 1e-9:
            raise ValueError(f"{key} must be a multiple of {step}, got {v}")
