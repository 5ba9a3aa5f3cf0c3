"""Correlations between columns (datasets, traits) over architectures: point estimates,
bootstrap intervals (resampling architectures) and permutation p-values, vectorised.

A bootstrap sample is held as counts (how often each architecture was drawn), so a
resample's statistic is a weighted one over the original rows: Pearson needs one matrix
product for every sample, Spearman's ranks of a resample come from cumulative counts in
each column's fixed sort order (no sorting per sample; analysis.replicates), and Kendall's
concordance comes from blocks of rows (analysis.kendall). Missing values are handled
pairwise: each pair uses the architectures both columns have, and reports that count.

Resamples can be passed in as counts over all rows (`counts=`), so that every pair, and
every table computed with the same counts, sees the same draws of architectures: resample
b of one pair and resample b of another then form a paired sample (differences between
correlations, corrections for attenuation). A pair with missing values keeps, of each
draw, the drawn rows it has.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations, permutations

import numpy as np
import pandas as pd
from scipy import stats as sps
from tqdm.auto import tqdm

from analysis.kendall import kendall_null, kendall_replicates
from analysis.replicates import null_matrix, pearson_replicates, spearman_replicates

METHODS = ("pearson", "spearman", "kendall")
MIN_N = 3  # fewer architectures than this give no correlation


@dataclass(frozen=True)
class Correlations:
    """One row per pair (a, b): method, n (architectures both have), r, interval lo..hi, p.

    `samples[i]` are the bootstrap replicates of row i (NaN where undefined)."""

    table: pd.DataFrame
    samples: np.ndarray
    names: tuple[str, ...]
    confidence: float

    def matrix(self, value: str = "r") -> pd.DataFrame:
        """Square, symmetric table of `value` (r, lo, hi, p or n); r is 1 on the diagonal."""
        if value not in ("r", "lo", "hi", "p", "n"):
            raise ValueError(f"value {value!r}; valid: r, lo, hi, p, n")
        position = {name: i for i, name in enumerate(self.names)}
        values = np.full((len(self.names),) * 2, np.nan)
        i = self.table["a"].map(position).to_numpy()
        j = self.table["b"].map(position).to_numpy()
        values[i, j] = values[j, i] = self.table[value].to_numpy(dtype=float)
        if value == "r":
            np.fill_diagonal(values, 1.0)
        return pd.DataFrame(values, index=list(self.names), columns=list(self.names))

    @cached_property
    def _positions(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for i, (a, b) in enumerate(zip(self.table["a"], self.table["b"], strict=True)):
            out.setdefault((a, b), i)
            out.setdefault((b, a), i)
        return out

    def row(self, a: str, b: str) -> int:
        """Position of the pair (a, b) in either order; ValueError if it was not computed."""
        position = self._positions.get((a, b))
        if position is None:
            raise ValueError(f"no correlation computed between {a!r} and {b!r}")
        return position

    def get(self, a: str, b: str) -> pd.Series:
        return self.table.iloc[self.row(a, b)]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; valid: {', '.join(METHODS)}")
    return method


_HUGE = 1e300  # infinite replicates (an undefined ratio) are sorted as this, then restored


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along the last axis. NaN replicates (a resample whose
    statistic is undefined, e.g. a constant column) are left out; infinite ones are kept
    and an end that falls among them is infinite (the interval is unbounded there)."""
    tail = 50 * (1 - confidence)
    if samples.shape[-1] == 0:
        empty = np.full(samples.shape[:-1], np.nan)
        return empty, empty.copy()
    with np.errstate(all="ignore"):
        present = ~np.isnan(samples)
        finite = present.any(axis=-1)
        safe = np.where(finite[..., None], np.clip(samples, -_HUGE, _HUGE), 0.0)
        lo, hi = np.nanpercentile(safe, [tail, 100 - tail], axis=-1)
        lo, hi = (np.where(np.abs(v) >= _HUGE / 10, np.sign(v) * np.inf, v) for v in (lo, hi))
    return np.where(finite, lo, np.nan), np.where(finite, hi, np.nan)


def monte_carlo_error(samples: np.ndarray, confidence: float) -> np.ndarray:
    """Monte-Carlo standard error of the percentile interval's ends along the last axis,
    from the order statistics around each end: with m replicates (NaN left out), the
    p-quantile's sampling sd is about half the distance between the order statistics at
    m p - s and m p + s, s = sqrt(m p (1 - p)) (one binomial sd of the count below it).
    Returns (..., 2): the error of lo and of hi; NaN with fewer than 20 replicates."""
    tail = (1 - confidence) / 2
    ordered = np.sort(samples, axis=-1)  # NaN sorts last
    m = np.count_nonzero(~np.isnan(samples), axis=-1)
    out = []
    for p in (tail, 1 - tail):
        spread = np.sqrt(m * p * (1 - p))
        top = np.maximum(m - 1, 0)
        lo = np.clip(np.floor(m * p - spread), 0, top).astype(np.intp)
        hi = np.clip(np.ceil(m * p + spread), 0, top).astype(np.intp)
        a = np.take_along_axis(ordered, lo[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(ordered, hi[..., None], axis=-1)[..., 0]
        with np.errstate(all="ignore"):
            # An end among infinite replicates is infinite whatever the draw: no error.
            error = np.where(a == b, 0.0, (b - a) / 2)
        out.append(np.where(m >= 20, error, np.nan))
    return np.stack(out, axis=-1)


def paired_difference(
    correlations: Correlations, first: tuple[str, str], second: tuple[str, str]
) -> tuple[float, float, float]:
    """r(first) - r(second) with the percentile interval of the differences of their
    replicates; meaningful when both were resampled with the same counts (paired)."""
    a, b = correlations.get(*first), correlations.get(*second)
    diff = (
        correlations.samples[correlations.row(*first)]
        - correlations.samples[correlations.row(*second)]
    )
    lo, hi = percentile_interval(diff, correlations.confidence)
    return float(a["r"] - b["r"]), float(lo), float(hi)


def permutation_pvalue(observed: np.ndarray, null: np.ndarray, exact: bool) -> np.ndarray:
    """Two-sided p-value of `observed` against null samples along axis 0, as
    scipy.stats.permutation_test computes it (same tolerance and +1 adjustment)."""
    observed = np.asarray(observed, dtype=float)
    adjust = 0 if exact else 1
    gamma = np.abs(np.finfo(float).eps * 100 * observed)
    count = len(null)
    less = (np.count_nonzero(null <= observed + gamma, axis=0) + adjust) / (count + adjust)
    greater = (np.count_nonzero(null >= observed - gamma, axis=0) + adjust) / (count + adjust)
    p = np.clip(2 * np.minimum(less, greater), 0.0, 1.0)
    return np.where(np.isfinite(observed), p, np.nan)


def bootstrap_counts(rng: np.random.Generator, n: int, samples: int) -> np.ndarray:
    """(samples, n): how often each of n rows is drawn in each resample of size n."""
    draws = rng.integers(0, n, size=(samples, n))
    offsets = (np.arange(samples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=samples * n).reshape(samples, n)


def permutation_indices(rng: np.random.Generator, n: int, count: int) -> tuple[np.ndarray, bool]:
    """Random permutations of range(n), or all of them when there are no more than `count`
    (then the test is exact, as in scipy)."""
    if count == 0:
        return np.empty((0, n), dtype=np.intp), False
    if count > 0 and n <= 10 and math.factorial(n) <= count:
        return np.array(list(permutations(range(n))), dtype=np.intp), True
    base = np.broadcast_to(np.arange(n), (count, n))
    return rng.permuted(base, axis=1), False


# ---- point estimates and replicates for the pearson and spearman methods ---------------
def _standardise(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=0)
    with np.errstate(all="ignore"):
        return centred / np.sqrt((centred**2).mean(axis=0))


def _distinct_columns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first of each set of identical columns, and for every column its set's place."""
    first: dict[bytes, int] = {}
    back = np.array(
        [first.setdefault(values[:, j].tobytes(), len(first)) for j in range(values.shape[1])],
        dtype=np.intp,
    )
    return np.unique(back, return_index=True)[1], back


def _replicates(
    method: str, values: np.ndarray, draws: np.ndarray, left: np.ndarray, right: np.ndarray
) -> np.ndarray:
    """(pairs, resamples): Pearson or Spearman replicates of the pairs (left, right) of the
    columns of `values`: a few of the matrix's pairs alone, else the whole matrix."""
    replicate = pearson_replicates if method == "pearson" else spearman_replicates
    columns = values.shape[1]
    if 4 * len(left) < columns * (columns - 1) / 2:
        return replicate(values, draws, (left, right)).T
    return replicate(values, draws)[:, left, right].T


# ---- the public entry point ------------------------------------------------------------
def _pair_list(
    names: Sequence[str], pairs: Iterable[tuple[str, str]] | None
) -> list[tuple[int, int]]:
    index = {name: i for i, name in enumerate(names)}
    if pairs is None:
        return list(combinations(range(len(names)), 2))
    out = []
    for a, b in pairs:
        for name in (a, b):
            if name not in index:
                raise ValueError(f"column {name!r} is not in the table; columns: {list(names)}")
        out.append((index[a], index[b]))
    return out


def correlate(
    values: pd.DataFrame,
    *,
    method: str = "spearman",
    pairs: Iterable[tuple[str, str]] | None = None,
    bootstrap: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
    counts: np.ndarray | None = None,
) -> Correlations:
    """Correlate columns of `values` (rows: architectures; NaN: missing) pairwise.

    `pairs` defaults to every pair of columns. Each pair uses the rows both columns have
    (n in the table); bootstrap intervals are percentile intervals over resampled rows;
    p-values are two-sided permutation p-values (exact when n! <= permutations).
    `counts` (resamples x rows of `values`) fixes the bootstrap draws, shared by every
    pair (then `bootstrap` is its number of rows); by default they are drawn here."""
    check_method(method)
    if counts is not None:
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != len(values):
            raise ValueError(
                f"counts must be (resamples, {len(values)} rows), got shape {counts.shape}"
            )
        bootstrap = len(counts)
    if bootstrap < 0 or permutations < 0:
        raise ValueError(
            f"bootstrap and permutations must be >= 0, got {bootstrap} and {permutations}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    names = tuple(str(c) for c in values.columns)
    pair_idx = _pair_list(names, pairs)
    data = values.to_numpy(dtype=float)
    present = np.isfinite(data)
    rng = np.random.default_rng(seed)
    shared = bootstrap_counts(rng, len(data), bootstrap) if counts is None else counts
    count = len(pair_idx)
    r, p, n_rows = np.full(count, np.nan), np.full(count, np.nan), np.zeros(count, dtype=np.int64)
    samples = np.full((count, bootstrap), np.nan)
    groups: dict[bytes, list[int]] = {}
    for k, (i, j) in enumerate(pair_idx):
        groups.setdefault(np.packbits(present[:, i] & present[:, j]).tobytes(), []).append(k)
    null_cache: dict[bytes, np.ndarray] = {}
    bar = tqdm(
        total=count, desc=f"{method} correlations", unit="pair", disable=not progress, leave=False
    )
    for members in groups.values():
        i0, j0 = pair_idx[members[0]]
        rows = np.flatnonzero(present[:, i0] & present[:, j0])
        n_rows[members] = len(rows)
        if len(rows) < MIN_N:
            bar.update(len(members))
            continue
        cols = sorted({c for k in members for c in pair_idx[k]})
        local = {c: m for m, c in enumerate(cols)}
        sub = data[np.ix_(rows, np.array(cols, dtype=np.intp))]
        left = np.array([local[pair_idx[k][0]] for k in members])
        right = np.array([local[pair_idx[k][1]] for k in members])
        draws = shared[:, rows]
        perms, exact = permutation_indices(rng, len(rows), permutations)
        if method == "kendall":
            for k, a, b in zip(members, left, right, strict=True):
                x, y = sub[:, a], sub[:, b]
                r[k] = sps.kendalltau(x, y).statistic
                samples[k] = kendall_replicates(x, y, draws)
                if permutations:
                    null = kendall_null(x, y, perms, null_cache)
                    p[k] = permutation_pvalue(r[k], null, exact)
                bar.update(1)
            continue
        # Spearman's r is Pearson's r of average ranks.
        z = _standardise(sps.rankdata(sub, axis=0) if method == "spearman" else sub)
        r[members] = (z[:, left] * z[:, right]).mean(axis=0)
        # Identical columns (e.g. complexity counted alike for datasets of one resolution and
        # class count) are resampled and permuted once.
        unique, back = _distinct_columns(sub)
        left, right = back[left], back[right]
        if bootstrap:
            samples[members] = _replicates(method, sub[:, unique], draws, left, right)
        if permutations:
            null = null_matrix(z[:, unique], perms, left, right)
            p[members] = permutation_pvalue(r[members], null, exact)
        bar.update(len(members))
    bar.close()
    lo, hi = percentile_interval(samples, confidence)
    table = pd.DataFrame(
        {
            "a": [names[i] for i, _ in pair_idx],
            "b": [names[j] for _, j in pair_idx],
            "method": method,
            "n": n_rows,
            "r": r,
            "lo": lo,
            "hi": hi,
            "p": p,
        }
    )
    return Correlations(table=table, samples=samples, names=names, confidence=confidence)


# ---- noise floor ---------------------------------------------------------------------
def spearman_brown(r: np.ndarray | float, seeds: np.ndarray | float) -> np.ndarray:
    """Reliability of a mean over `seeds` trainings from the single-training reliability r,
    with r clamped at 0 (a seed-to-seed r <= 0 means no repeatable signal: reliability 0).
    NaN only where r itself is undefined."""
    r = np.clip(np.asarray(r, dtype=float), 0.0, 1.0)
    with np.errstate(all="ignore"):
        return np.asarray(seeds * r / (1 + (seeds - 1) * r))


def seed_reliability(
    by_seed: pd.DataFrame,
    *,
    method: str = "spearman",
    seeds_averaged: float | None = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """One dataset's seed-to-seed agreement. `by_seed`: architecture x seed errors.

    Uses the architectures that have every seed; the single-training reliability is the
    mean correlation over pairs of seeds, and the reliability of the per-architecture mean
    follows from Spearman-Brown with `seeds_averaged` (default: the number of seeds).
    `counts` (resamples x rows of `by_seed`) are the bootstrap draws to use, so that the
    replicates pair with those of correlations drawn with the same counts; every replicate
    is kept (reliability clamped at 0). Returns the summary and the replicates of the
    mean's reliability."""
    check_method(method)
    keep = by_seed.notna().all(axis=1).to_numpy()
    complete = by_seed[keep]
    seeds = by_seed.shape[1]
    s = float(seeds if seeds_averaged is None else seeds_averaged)
    if counts is not None:
        counts = np.asarray(counts)[:, keep]
        bootstrap = len(counts)
    summary = {
        "seeds": seeds,
        "n": len(complete),
        "seeds_averaged": s,
        "seed_r": np.nan,
        "seed_lo": np.nan,
        "seed_hi": np.nan,
        "reliability": np.nan,
        "reliability_lo": np.nan,
        "reliability_hi": np.nan,
    }
    replicates = np.full(bootstrap, np.nan)
    if seeds < 2 or len(complete) < MIN_N:
        return summary, replicates
    result = correlate(
        complete,
        method=method,
        bootstrap=bootstrap,
        permutations=0,
        confidence=confidence,
        seed=seed,
        counts=counts,
    )
    single = float(result.table["r"].mean())
    single_samples = result.samples.mean(axis=0)
    replicates = spearman_brown(single_samples, s)
    lo, hi = percentile_interval(single_samples, confidence)
    rel_lo, rel_hi = percentile_interval(replicates, confidence)
    summary.update(
        seed_r=single,
        seed_lo=float(lo),
        seed_hi=float(hi),
        reliability=float(spearman_brown(single, s)),
        reliability_lo=float(rel_lo),
        reliability_hi=float(rel_hi),
    )
    return summary, replicates


def _corrected(r: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """r / ceiling, not capped; where the ceiling is 0 the ratio is undefined: +-inf by the
    sign of r (so an interval that reaches such replicates is unbounded), NaN for r = 0."""
    with np.errstate(all="ignore"):
        ratio = r / ceiling
        zero = ceiling == 0
        return np.where(zero, np.where(r == 0, np.nan, np.sign(r) * np.inf), ratio)


def corrected_replicates(
    correlations: Correlations, replicates: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `correlations` and replicate: the noise ceiling sqrt(rel_a * rel_b) and
    the corrected r (NaN where a dataset has no reliability replicates)."""
    table = correlations.table
    count = correlations.samples.shape[1]
    nan = np.full(count, np.nan)
    ceiling = np.array(
        [
            np.sqrt(replicates.get(a, nan) * replicates.get(b, nan))
            for a, b in zip(table["a"], table["b"], strict=True)
        ],
        dtype=float,
    ).reshape(len(table), count)
    return ceiling, _corrected(correlations.samples, ceiling)


def disattenuate(
    correlations: Correlations,
    reliability: dict[str, float],
    replicates: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Spearman's correction for attenuation of every pair: r / sqrt(rel_a * rel_b).

    Adds `ceiling` (sqrt(rel_a * rel_b): what r is expected to reach at most when the two
    datasets' noise-free rankings agree perfectly, given the noise of the means correlated;
    a single sample's r can exceed it), with its interval, and `r_corrected` with its
    interval. Replicate b of the correlation and of each reliability must come from the
    same draws of architectures (correlate and seed_reliability with the same counts).
    Nothing is capped: a corrected r above 1 is sampling noise. A point estimate whose
    ceiling is 0 is undefined (NaN); an interval reaching resamples with ceiling 0 is
    unbounded (+-inf) on that side."""
    table = correlations.table.copy()
    ceiling_arr = np.array(
        [
            np.sqrt(reliability.get(a, np.nan) * reliability.get(b, np.nan))
            for a, b in zip(table["a"], table["b"], strict=True)
        ],
        dtype=float,
    )
    point = _corrected(table["r"].to_numpy(dtype=float), ceiling_arr)
    corrected = np.where(np.isfinite(point), point, np.nan)
    ceiling_samples, corrected_samples = corrected_replicates(correlations, replicates)
    table["ceiling"] = ceiling_arr
    table["ceiling_lo"], table["ceiling_hi"] = percentile_interval(
        ceiling_samples, correlations.confidence
    )
    table["r_corrected"] = corrected
    lo, hi = percentile_interval(corrected_samples, correlations.confidence)
    table["corrected_lo"], table["corrected_hi"] = lo, hi
    return table
