"""Kendall's tau-b for many resamples at once: bootstrap replicates as c^T S c products and
permutation nulls by vectorised inversion counting (merge levels over a batch)."""

from __future__ import annotations

import numpy as np

_CHUNK = 1024  # columns of the pairwise sign matrix built at a time


def _tied_pairs(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, the pairs tied in `values` (copies of one row are tied too)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    totals = np.add.reduceat(counts[:, order].astype(np.float64), starts, axis=1)
    return (totals * (totals - 1) / 2).sum(axis=1)


def kendall_replicates(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """tau-b of each resample described by `counts` (samples, n), as scipy.stats.kendalltau
    gives it on the resampled rows. Concordance is c^T S c / 2 with S the sign products:
    S and the counts are small integers, so float32 products are exact."""
    n = len(x)
    if len(counts) == 0:
        return np.empty(0)
    weights = counts.astype(np.float32)
    concordance = np.zeros(len(counts))
    for first in range(0, n, _CHUNK):
        part = slice(first, first + _CHUNK)
        signs = np.sign(x[:, None] - x[None, part]) * np.sign(y[:, None] - y[None, part])
        product = (weights @ signs.astype(np.float32)).astype(np.float64)
        concordance += np.einsum("bj,bj->b", product, counts[:, part].astype(np.float64))
    total = counts.sum(axis=1).astype(np.float64)
    pairs = total * (total - 1) / 2
    with np.errstate(all="ignore"):
        return (concordance / 2) / np.sqrt(
            (pairs - _tied_pairs(x, counts)) * (pairs - _tied_pairs(y, counts))
        )


def inversions(seq: np.ndarray) -> np.ndarray:
    """Per row of `seq` (b, n) of non-negative ints: the pairs i < j with seq[i] > seq[j].
    Bottom-up merge over the whole batch: each level sorts every block of two sorted runs
    by (value, side); a left-run element at merged position q has q - (its rank among the
    left run) right-run elements below it, so the block's inversions are sum(q) - run(run-1)/2."""
    rows, n = seq.shape
    size = 1 << max(0, (n - 1).bit_length())
    top = int(seq.max(initial=0)) + 1
    dtype = np.int32 if 2 * top + 2 < np.iinfo(np.int32).max else np.int64
    # Padding sorts after every value and never forms an inversion.
    cur = np.full((rows, size), top, dtype=dtype)
    cur[:, :n] = seq
    total = np.zeros(rows, dtype=np.float64)
    run = 1
    while run < size:
        side = (np.arange(2 * run) >= run).astype(dtype)
        keys = cur.reshape(rows, size // (2 * run), 2 * run) * 2 + side
        keys.sort(axis=2)
        left = ((keys & 1) == 0).astype(np.float32)
        positions = left @ np.arange(2 * run, dtype=np.float32)  # exact: small integers
        total += positions.sum(axis=1, dtype=np.float64) - (size // (2 * run)) * run * (run - 1) / 2
        cur = (keys >> 1).reshape(rows, size)
        run *= 2
    return total.astype(np.int64)


def _equal_pairs(ordered: np.ndarray) -> np.ndarray:
    """Per row of a row-sorted array: the pairs of equal values."""
    seq = ordered
    pos = np.broadcast_to(np.arange(seq.shape[1]), seq.shape)
    new = np.ones(seq.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    return (pos - start).sum(axis=1).astype(np.float64)


def _dense(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def _tie_pairs_fixed(dense: np.ndarray) -> float:
    sizes = np.bincount(dense).astype(np.float64)
    return float((sizes * (sizes - 1) / 2).sum())


def kendall_tau_batch(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """tau-b of x against each row of ys (b, n), as scipy.stats.kendalltau gives it."""
    gys = np.stack([_dense(row) for row in ys]) if len(ys) else np.empty((0, len(x)), dtype=np.intp)
    n2 = np.array([_tie_pairs_fixed(row) for row in gys])
    return _tau_dense(_dense(x), gys, n2)


def _tau_dense(gx: np.ndarray, gys: np.ndarray, n2: np.ndarray | float) -> np.ndarray:
    """Knight's way: P - Q = n0 - n1 - n2 + n3 - 2Q, with Q (discordant pairs) counted as
    inversions of y in x's order, n1, n2, n3 the pairs tied in x, in y, in both."""
    n = len(gx)
    order = np.argsort(gx, kind="stable")
    xs = gx[order]
    seq = gys[:, order]
    n0 = n * (n - 1) / 2
    n1 = _tie_pairs_fixed(gx)
    if n1 == 0:
        discordant = inversions(seq)
        joint = np.zeros(len(seq))
    else:
        # Sorting y within each x group leaves cross-group order intact and removes the
        # within-group inversions, which are not discordant pairs.
        width = int(seq.max(initial=0)) + 1
        key = np.sort(xs[None, :] * width + seq, axis=1)
        joint = _equal_pairs(key)
        discordant = inversions(key % width)
    with np.errstate(all="ignore"):
        return (n0 - n1 - n2 + joint - 2 * discordant) / np.sqrt((n0 - n1) * (n0 - n2))


def kendall_null(
    x: np.ndarray, y: np.ndarray, perms: np.ndarray, cache: dict[bytes, np.ndarray]
) -> np.ndarray:
    """tau-b of x against y permuted by each row of `perms`. The null depends only on n and
    the two tie patterns, so it is computed once per pattern and kept in `cache`."""
    gx, gy = _dense(x), _dense(y)
    key = b"|".join(
        [
            np.int64(len(x)).tobytes(),
            np.bincount(gx).tobytes(),
            np.bincount(gy).tobytes(),
            np.int64(len(perms)).tobytes(),
        ]
    )
    if key not in cache:
        cache[key] = _tau_dense(gx, gy[perms], _tie_pairs_fixed(gy))
    return cache[key]
