"""Bootstrap replicates and permutation nulls of Pearson and Spearman correlations,
vectorised over resamples (the kernels behind `analysis.stats.correlate`).

A resample is held as counts (how often each row was drawn), so its statistic is a
weighted one over the original rows. Spearman's average ranks of a resample come from
cumulative counts along each column's fixed sort order: no sorting per resample. Every
kernel works on batches of resamples about 1 MB large, so they stay in cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BATCH_ELEMENTS = 131_072  # floats per batch array (1 MB in float64): small enough for cache

Pairs = tuple[np.ndarray, np.ndarray]  # column indices (left, right) of the pairs wanted


def batch_size(samples: int, n: int, columns: int) -> int:
    """How many resamples of n rows x `columns` columns make one cache-sized batch."""
    return int(max(1, min(samples, _BATCH_ELEMENTS // max(1, n * columns))))


def _normalise(gram: np.ndarray) -> np.ndarray:
    diag = np.sqrt(np.clip(np.diagonal(gram, axis1=-2, axis2=-1), 0, None))
    with np.errstate(all="ignore"):
        return gram / (diag[..., :, None] * diag[..., None, :])


def _pair_correlations(cov: np.ndarray, var: np.ndarray, pairs: Pairs) -> np.ndarray:
    """(b, pairs) correlations from the pairs' co-variation and every column's variation."""
    left, right = pairs
    with np.errstate(all="ignore"):
        return cov / np.sqrt(np.clip(var[:, left], 0, None) * np.clip(var[:, right], 0, None))


def pearson_replicates(
    values: np.ndarray, counts: np.ndarray, pairs: Pairs | None = None
) -> np.ndarray:
    """(samples, c, c) Pearson matrices of the resamples `counts` describes: one product
    of the counts with the rows' cross products. With `pairs`, (samples, pairs): only
    those correlations (the cross products of those pairs alone)."""
    n, c = values.shape
    centred = values - values.mean(axis=0)
    if pairs is None:
        cross = (centred[:, :, None] * centred[:, None, :]).reshape(n, c * c)
    else:
        cross = np.concatenate([centred[:, pairs[0]] * centred[:, pairs[1]], centred**2], axis=1)
    out = np.empty((len(counts), c, c) if pairs is None else (len(counts), len(pairs[0])))
    step = batch_size(len(counts), cross.shape[1], 1)
    for start in range(0, len(counts), step):
        w = counts[start : start + step].astype(float)
        total = w.sum(axis=1)
        with np.errstate(all="ignore"):
            mean = w @ centred / total[:, None]
            second = (w @ cross) / total[:, None]
        if pairs is None:
            moment = second.reshape(-1, c, c) - mean[:, :, None] * mean[:, None, :]
            out[start : start + step] = _normalise(moment)
            continue
        left, right = pairs
        cov = second[:, : len(left)] - mean[:, left] * mean[:, right]
        out[start : start + step] = _pair_correlations(cov, second[:, len(left) :] - mean**2, pairs)
    return out


def _tie_bounds(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sorted position, the first and last position of its run of equal values."""
    n = len(ordered)
    pos = np.broadcast_to(np.arange(n)[:, None], ordered.shape)
    new = np.ones(ordered.shape, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    last = np.ones(ordered.shape, dtype=bool)
    last[:-1] = new[1:]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=0)
    end = np.minimum.accumulate(np.where(last, pos, n - 1)[::-1], axis=0)[::-1]
    return start, end


@dataclass(frozen=True)
class _RankPlan:
    """Where each resample's counts go to give its ranks, as flat positions (a gather over
    one axis is several times faster than a 2-D fancy index). Cumulative counts are laid
    out per column as n + 1 values: 0, then the running sum along the column's order."""

    by_rank: np.ndarray  # (c n,): the rows in each column's sort order
    before: np.ndarray  # (c n,): per column and row, the cumulative count before its run
    through: np.ndarray  # (c n,): ... and the cumulative count through its run's end


def _rank_plan(values: np.ndarray) -> _RankPlan:
    n, c = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    start, end = _tie_bounds(np.take_along_axis(values, order, axis=0))
    position = np.argsort(order, axis=0)  # each row's place in its column's order
    offset = (np.arange(c) * (n + 1))[:, None]
    first = np.take_along_axis(start, position, axis=0).T + offset
    last = np.take_along_axis(end, position, axis=0).T + offset + 1
    return _RankPlan(order.T.ravel(), first.ravel(), last.ravel())


def _twice_centred_ranks(w: np.ndarray, plan: _RankPlan, c: int) -> np.ndarray:
    """(b, c, n) float32: twice each row's average rank in each resample, minus the
    resample's size plus 1, i.e. twice the rank's distance from the mean rank (scale does
    not change a correlation). A run of equal values spanning cumulative counts (s, t]
    has average rank (s + t + 1) / 2, so twice its centred rank is s + t - W. float32 holds
    every count, cumulative count and such sum exactly (all below 2^24)."""
    b, n = w.shape
    cumulative = np.zeros((b, c, n + 1), dtype=np.float32)
    sorted_counts = np.take(w, plan.by_rank, axis=1).reshape(b, c, n)
    np.cumsum(sorted_counts, axis=2, out=cumulative[:, :, 1:])
    flat = cumulative.reshape(b, -1)
    twice = np.take(flat, plan.before, axis=1)
    twice += np.take(flat, plan.through, axis=1)
    twice -= w.sum(axis=1, dtype=np.float32)[:, None]
    return twice.reshape(b, c, n)


def _gram(x: np.ndarray) -> np.ndarray:
    """x x^T per resample; one resample at a time is a symmetric product (half the work)."""
    if len(x) == 1:
        return (x[0] @ x[0].T)[None]
    return np.matmul(x, x.transpose(0, 2, 1))


def spearman_replicates(
    values: np.ndarray, counts: np.ndarray, pairs: Pairs | None = None
) -> np.ndarray:
    """(samples, c, c) Spearman matrices of the resamples: average ranks of each resample
    from cumulative counts along each column's sort order, then weighted Pearson (with
    ranks scaled by the square root of the counts, one product gives every weighted
    co-variation). With `pairs`, (samples, pairs): only those correlations (each column
    ranked once, then the block of products between the pairs' left and right columns)."""
    n, c = values.shape
    plan = _rank_plan(values)
    if pairs is not None:
        lefts, left_at = np.unique(pairs[0], return_inverse=True)
        rights, right_at = np.unique(pairs[1], return_inverse=True)
    out = np.empty((len(counts), c, c) if pairs is None else (len(counts), len(pairs[0])))
    step = batch_size(len(counts), n, c)
    for first in range(0, len(counts), step):
        w = counts[first : first + step].astype(np.float32)
        scaled = np.multiply(
            _twice_centred_ranks(w, plan, c), np.sqrt(w, dtype=np.float64)[:, None, :]
        )
        if pairs is None:
            out[first : first + step] = _normalise(_gram(scaled))
            continue
        var = np.einsum("bcn,bcn->bc", scaled, scaled)
        block = np.matmul(_take(scaled, lefts), _take(scaled, rights).transpose(0, 2, 1))
        out[first : first + step] = _pair_correlations(block[:, left_at, right_at], var, pairs)
    return out


def _take(x: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """x[:, columns]: a view when the columns are a contiguous run (no copy)."""
    if len(columns) and columns[-1] - columns[0] == len(columns) - 1:
        return x[:, columns[0] : columns[-1] + 1]
    return x[:, columns]


def null_matrix(
    z: np.ndarray, perms: np.ndarray, left: np.ndarray, right: np.ndarray
) -> np.ndarray:
    """(permutations, pairs): correlation of standardised column `left` with column `right`
    permuted; only the block of the pairs' left by right columns is multiplied."""
    n, _ = z.shape
    lefts, left_at = np.unique(left, return_inverse=True)
    rights, right_at = np.unique(right, return_inverse=True)
    fixed = np.ascontiguousarray(z[:, lefts].T)[None]
    moving = np.ascontiguousarray(z[:, rights])
    out = np.empty((len(perms), len(left)))
    step = batch_size(len(perms), n, len(rights))
    for first in range(0, len(perms), step):
        shuffled = moving[perms[first : first + step]]  # (b, n, rights)
        out[first : first + step] = np.matmul(fixed, shuffled)[:, left_at, right_at] / n
    return out
