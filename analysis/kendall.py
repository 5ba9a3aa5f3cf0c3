"""Kendall's tau-b for many resamples at once: bootstrap replicates from blocks of rows
(sign products within blocks, histograms between them) and permutation nulls by
vectorised inversion counting (merge levels over a batch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GEMM_ELEMENTS = 1 << 21  # resamples x rows per product with the blocks' sign matrices
_HISTOGRAM_CELLS = 1 << 18  # resamples x blocks x values per histogram between blocks


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array begins."""
    return np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _group_pairs(weights: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per resample, sum over groups (runs beginning at `starts`) of T (T - 1) / 2 with T
    the group's total count: the pairs tied within groups (float32 holds the totals)."""
    totals = np.add.reduceat(weights, starts, axis=1).astype(np.float64)
    return (totals * (totals - 1) / 2).sum(axis=1)


def block_size(n: int) -> int:
    """Rows per block of `kendall_replicates`: the power of two near sqrt(64 n), which
    balances the blocks' products (n m per resample, fast) against the histograms between
    blocks (n^2 / m, slower per step); at least 64."""
    return int(max(64, 2 ** round(np.log2(np.sqrt(64 * max(n, 1))))))


def _block_signs(seq: np.ndarray, m: int) -> np.ndarray:
    """(blocks, m, m): sign(seq_j - seq_i) for i < j in each block of m rows, else 0."""
    s = seq.reshape(-1, m).astype(np.float32)
    return np.triu(np.sign(s[:, None, :] - s[:, :, None]), k=1)


def _within_blocks(signs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample, sum over i < j in the same block of c_i c_j sign(seq_j - seq_i): one
    product of the counts with each block's sign matrix (small integers: exact in
    float32)."""
    blocks, m, _ = signs.shape
    w = weights.reshape(len(weights), blocks, m).transpose(1, 0, 2)  # (blocks, b, m)
    return np.einsum("kbj,kbj->b", np.matmul(w, signs), w, dtype=np.float64)


def _between_blocks(seq: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
    """Per resample, the same sum over i in an earlier block than j: with H[k, v] the
    counts in blocks before k with value below v, row j in block k has H[k, v_j] rows
    below it and H[k, top] - H[k, v_j + 1] above it."""
    b, n = weights.shape
    blocks, top = n // m, int(seq.max(initial=0)) + 1
    if blocks < 2:
        return np.zeros(b)
    block = np.repeat(np.arange(blocks), m)
    cells = blocks * (top + 1)
    spot = block * (top + 1) + seq + 1  # value v counted in the column after it
    flat = (spot[None, :] + (np.arange(b) * cells)[:, None]).ravel()
    hist = np.bincount(flat, weights=weights.ravel(), minlength=b * cells)
    hist = hist.reshape(b, blocks, top + 1).astype(np.float32)
    below = np.zeros_like(hist)  # over the blocks before: exclusive
    np.cumsum(np.cumsum(hist[:, :-1], axis=2), axis=1, out=below[:, 1:])
    flat_below = below.reshape(b, -1)
    base = block * (top + 1)
    less = np.take(flat_below, base + seq, axis=1)
    less += np.take(flat_below, base + seq + 1, axis=1)
    less -= np.take(flat_below, base + top, axis=1)
    return np.einsum("bj,bj->b", less, weights, dtype=np.float64)


@dataclass(frozen=True)
class _Layout:
    """The rows in order of (x, y), padded to whole blocks, and where ties begin."""

    order: np.ndarray  # rows by (x, y)
    seq: np.ndarray  # y's dense rank along that order (0 in the padding)
    signs: np.ndarray  # the blocks' sign matrices
    m: int  # rows per block
    x_starts: np.ndarray  # runs of equal x along the order
    joint_starts: np.ndarray  # runs of equal (x, y)
    y_order: np.ndarray  # positions of the order sorted by y
    y_starts: np.ndarray  # runs of equal y along y_order


def _layout(x: np.ndarray, y: np.ndarray, block: int | None) -> _Layout:
    n = len(x)
    gx, gy = _dense(x), _dense(y)
    order = np.lexsort((gy, gx))
    m = min(block or block_size(n), 1 << max(0, (n - 1).bit_length()))
    seq = np.zeros(-(-n // m) * m, dtype=np.int64)  # padding rows have count 0
    seq[:n] = gy[order]
    joint = gx[order] * (seq.max(initial=0) + 1) + seq[:n]
    y_order = np.argsort(seq[:n], kind="stable")
    return _Layout(
        order=order,
        seq=seq,
        signs=_block_signs(seq, m),
        m=m,
        x_starts=_run_starts(gx[order]),
        joint_starts=_run_starts(joint),
        y_order=y_order,
        y_starts=_run_starts(seq[y_order]),
    )


def kendall_replicates(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray, *, block: int | None = None
) -> np.ndarray:
    """tau-b of each resample described by `counts` (samples, n), as scipy.stats.kendalltau
    gives it on the resampled rows. Along the rows' order by (x, y), the sum T of c_i c_j
    sign(y_j - y_i) over i < j is P - Q plus the pairs tied in x but not in y (n1 - n3);
    T comes from blocks of rows (products within blocks, histograms between them), about
    n^1.5 per resample instead of n^2. `block` sets the rows per block (a power of two;
    default `block_size`)."""
    n = len(x)
    if len(counts) == 0:
        return np.empty(0)
    lay = _layout(x, y, block)
    out = np.empty(len(counts))
    # Many resamples per product, so each block's sign matrix is read once for all of them.
    step = max(1, _GEMM_ELEMENTS // len(lay.seq))
    for first in range(0, len(counts), step):
        w = np.zeros((min(step, len(counts) - first), len(lay.seq)), dtype=np.float32)
        w[:, :n] = counts[first : first + step, lay.order]
        total = _within_blocks(lay.signs, w)
        part = max(1, _HISTOGRAM_CELLS // (len(lay.seq) // lay.m * (int(lay.seq.max()) + 2)))
        for start in range(0, len(w), part):
            total[start : start + part] += _between_blocks(lay.seq, w[start : start + part], lay.m)
        out[first : first + step] = _tau_b(total, w[:, :n], lay)
    return out


def _tau_b(total: np.ndarray, w: np.ndarray, lay: _Layout) -> np.ndarray:
    """tau-b from T (see kendall_replicates) and the ties of each resample."""
    tied_x = _group_pairs(w, lay.x_starts)
    tied_y = _group_pairs(w[:, lay.y_order], lay.y_starts)
    tied_both = _group_pairs(w, lay.joint_starts)
    size = w.sum(axis=1, dtype=np.float64)
    pairs = size * (size - 1) / 2
    with np.errstate(all="ignore"):
        return (total - tied_x + tied_both) / np.sqrt((pairs - tied_x) * (pairs - tied_y))


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
