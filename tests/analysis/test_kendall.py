"""Kendall's tau-b for batches: inversion counting and permutation nulls against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from analysis.kendall import (
    block_size,
    inversions,
    kendall_null,
    kendall_replicates,
    kendall_tau_batch,
)
from analysis.stats import bootstrap_counts


def _brute_inversions(row: np.ndarray) -> int:
    return sum(int(row[i] > row[j]) for i in range(len(row)) for j in range(i + 1, len(row)))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_inversions_count_strictly_decreasing_pairs(n):
    seq = np.random.default_rng(n).integers(0, 6, size=(12, n))
    assert inversions(seq).tolist() == [_brute_inversions(row) for row in seq]


@pytest.mark.parametrize("ties", ["none", "x", "y", "both"])
def test_tau_batch_equals_scipy_kendalltau(ties):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, 45).astype(float) if ties in ("x", "both") else rng.standard_normal(45)
    y = rng.integers(0, 5, 45).astype(float) if ties in ("y", "both") else rng.standard_normal(45)
    ys = np.stack([rng.permutation(y) for _ in range(20)])
    expected = [sps.kendalltau(x, row).statistic for row in ys]
    np.testing.assert_allclose(kendall_tau_batch(x, ys), expected, atol=1e-12)


def test_null_is_shared_between_pairs_with_the_same_tie_pattern():
    rng = np.random.default_rng(2)
    perms = np.stack([rng.permutation(30) for _ in range(50)])
    cache: dict[bytes, np.ndarray] = {}
    x, y = rng.standard_normal(30), rng.standard_normal(30)
    first = kendall_null(x, y, perms, cache)
    second = kendall_null(rng.standard_normal(30), rng.standard_normal(30), perms, cache)
    assert len(cache) == 1 and second is first
    np.testing.assert_allclose(
        first, [sps.kendalltau(x, y[p]).statistic for p in perms], atol=1e-12
    )


@pytest.mark.parametrize("block", [4, 8, 64])
@pytest.mark.parametrize("ties", ["none", "x", "both"])
def test_replicates_from_blocks_equal_scipy_on_the_resampled_rows(block, ties):
    rng = np.random.default_rng(block)
    x = rng.standard_normal(61)
    y = 0.5 * x + rng.standard_normal(61)
    if ties != "none":
        x = np.round(x, 0)
    if ties == "both":
        y = np.round(y, 0)
    counts = bootstrap_counts(rng, 61, 15)
    expected = [sps.kendalltau(np.repeat(x, c), np.repeat(y, c)).statistic for c in counts]
    mine = kendall_replicates(x, y, counts, block=block)
    np.testing.assert_allclose(mine, expected, atol=1e-12)


def test_blocks_grow_as_the_square_root_of_the_rows():
    assert [block_size(n) for n in (24, 500, 5000, 80_000)] == [64, 128, 512, 2048]
