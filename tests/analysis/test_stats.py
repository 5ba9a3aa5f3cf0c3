"""Correlations, bootstrap intervals and permutation p-values, checked against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.kendall import kendall_replicates
from analysis.replicates import pearson_replicates, spearman_replicates
from analysis.stats import (
    bootstrap_counts,
    correlate,
    disattenuate,
    monte_carlo_error,
    seed_reliability,
    spearman_brown,
)

SCIPY = {
    "pearson": lambda x, y: sps.pearsonr(x, y).statistic,
    "spearman": lambda x, y: sps.spearmanr(x, y).statistic,
    "kendall": lambda x, y: sps.kendalltau(x, y).statistic,
}


def _frame(n: int, rho: float, seed: int, ties: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    return pd.DataFrame({"ref": x, "target": y})


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
@pytest.mark.parametrize("ties", [False, True])
def test_point_estimates_equal_scipy(method, ties):
    data = _frame(60, 0.4, seed=1, ties=ties)
    data["third"] = np.round(np.random.default_rng(2).standard_normal(60), 1 if ties else 6)
    table = correlate(data, method=method, bootstrap=0, permutations=0).table
    for row in table.itertuples():
        assert row.r == pytest.approx(SCIPY[method](data[row.a], data[row.b]), abs=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_bootstrap_replicates_equal_scipy_on_the_resampled_rows(method):
    data = _frame(50, 0.5, seed=3, ties=True).to_numpy()
    rng = np.random.default_rng(4)
    draws = rng.integers(0, 50, size=(25, 50))
    counts = np.stack([np.bincount(d, minlength=50) for d in draws])
    if method == "kendall":
        mine = kendall_replicates(data[:, 0], data[:, 1], counts)
    else:
        replicate = pearson_replicates if method == "pearson" else spearman_replicates
        mine = replicate(data, counts)[:, 0, 1]
    expected = [SCIPY[method](data[d, 0], data[d, 1]) for d in draws]
    np.testing.assert_allclose(mine, expected, atol=1e-12)


def test_bootstrap_counts_describe_resamples_of_size_n():
    counts = bootstrap_counts(np.random.default_rng(0), 30, 400)
    assert counts.shape == (400, 30)
    assert (counts.sum(axis=1) == 30).all()
    assert counts.mean() == pytest.approx(1.0)


def _scipy_permutation_p(method: str, x: np.ndarray, y: np.ndarray, resamples: float) -> float:
    if method == "kendall":
        statistic, vectorized = (lambda xs: SCIPY[method](xs, y)), False
    else:
        # Spearman's r is Pearson's r of the ranks, and permuting x permutes its ranks.
        if method == "spearman":
            x, y = sps.rankdata(x), sps.rankdata(y)

        def statistic(xs: np.ndarray, axis: int) -> np.ndarray:
            return sps.pearsonr(xs, np.broadcast_to(y, xs.shape), axis=axis).statistic

        vectorized = True
    return sps.permutation_test(
        (x,),
        statistic,
        permutation_type="pairings",
        n_resamples=resamples,
        vectorized=vectorized,
        rng=np.random.default_rng(0),
    ).pvalue


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_exact_permutation_pvalue_equals_scipy_permutation_test(method):
    data = _frame(6, 0.8, seed=5)
    x, y = data["ref"].to_numpy(), data["target"].to_numpy()
    expected = _scipy_permutation_p(method, x, y, np.inf)
    # 6! = 720 permutations: both enumerate all of them.
    table = correlate(data, method=method, bootstrap=0, permutations=720).table
    assert table["p"].iloc[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_random_permutation_pvalue_agrees_with_scipy_within_monte_carlo_error(method):
    data = _frame(40, 0.25, seed=6)
    x, y = data["ref"].to_numpy(), data["target"].to_numpy()
    count = 1500 if method == "kendall" else 4000
    expected = _scipy_permutation_p(method, x, y, count)
    mine = (
        correlate(data, method=method, bootstrap=0, permutations=count, seed=1).table["p"].iloc[0]
    )
    assert 0.01 < expected < 0.5
    assert mine == pytest.approx(
        expected, abs=4 * np.sqrt(expected * (1 - expected) / count) + 0.005
    )


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_interval_agrees_with_scipy_percentile_bootstrap(method):
    data = _frame(80, 0.5, seed=7)
    x, y = data["ref"].to_numpy(), data["target"].to_numpy()

    def statistic(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        if method == "spearman":  # spearmanr of each resample, vectorised
            a, b = sps.rankdata(a, axis=axis), sps.rankdata(b, axis=axis)
        return sps.pearsonr(a, b, axis=axis).statistic

    ci = sps.bootstrap(
        (x, y),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=3000,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    row = correlate(data, method=method, bootstrap=3000, permutations=0, seed=2).table.iloc[0]
    assert row.lo == pytest.approx(ci.low, abs=0.03)
    assert row.hi == pytest.approx(ci.high, abs=0.03)


@pytest.mark.parametrize("rho", [-0.5, 0.9])
@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_planted_correlation_lies_inside_the_interval(rho, method):
    # Population values of each measure for a bivariate normal with correlation rho.
    planted = {
        "pearson": rho,
        "spearman": 6 / np.pi * np.arcsin(rho / 2),
        "kendall": 2 / np.pi * np.arcsin(rho),
    }[method]
    data = _frame(200, rho, seed=8)
    row = correlate(data, method=method, bootstrap=1000, permutations=200).table.iloc[0]
    assert row.lo < planted < row.hi
    assert row.hi - row.lo < 0.35
    assert row.p < 0.01


def test_spearman_interval_covers_the_planted_value_about_95_percent_of_the_time():
    planted = 6 / np.pi * np.arcsin(0.3 / 2)
    hits = [
        correlate(_frame(100, 0.3, seed=s), bootstrap=300, permutations=0, seed=s).table.iloc[0]
        for s in range(80)
    ]
    coverage = np.mean([row.lo < planted < row.hi for row in hits])
    assert 0.85 <= coverage <= 1.0


def test_missing_values_are_dropped_pairwise_and_counted():
    data = _frame(50, 0.5, seed=9)
    data["other"] = np.random.default_rng(1).standard_normal(50)
    data.loc[[0, 1, 2], "target"] = np.nan
    data.loc[[2, 3], "other"] = np.nan
    table = correlate(data, bootstrap=50, permutations=50).table.set_index(["a", "b"])
    assert table.loc[("ref", "target"), "n"] == 47
    assert table.loc[("ref", "other"), "n"] == 48
    assert table.loc[("target", "other"), "n"] == 46
    both = data[["target", "other"]].dropna()
    assert table.loc[("target", "other"), "r"] == pytest.approx(
        sps.spearmanr(both["target"], both["other"]).statistic
    )


def test_too_few_architectures_give_no_correlation():
    data = pd.DataFrame({"a": [1.0, 2.0, np.nan, np.nan], "b": [2.0, 1.0, 3.0, 4.0]})
    row = correlate(data, bootstrap=20, permutations=20).table.iloc[0]
    assert row.n == 2
    assert np.isnan(row.r) and np.isnan(row.lo) and np.isnan(row.p)


def test_same_seed_gives_same_results():
    data = _frame(60, 0.3, seed=10)
    first = correlate(data, bootstrap=100, permutations=100, seed=5).table
    again = correlate(data, bootstrap=100, permutations=100, seed=5).table
    pd.testing.assert_frame_equal(first, again)


def test_matrix_is_symmetric_with_unit_diagonal():
    data = _frame(40, 0.5, seed=11)
    data["c"] = np.random.default_rng(3).standard_normal(40)
    result = correlate(data, bootstrap=20, permutations=0)
    matrix = result.matrix("r")
    assert list(matrix.index) == ["ref", "target", "c"]
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T)
    np.testing.assert_allclose(np.diagonal(matrix.to_numpy()), 1.0)
    assert matrix.loc["target", "c"] == pytest.approx(result.get("c", "target")["r"])


def test_bad_method_and_unknown_columns_are_named():
    data = _frame(10, 0.5, seed=12)
    with pytest.raises(ValueError, match="valid: pearson, spearman, kendall"):
        correlate(data, method="distance")
    with pytest.raises(
        ValueError, match=r"column 'nope' is not in the table; columns: \['ref', 'target'\]"
    ):
        correlate(data, pairs=[("ref", "nope")])


def test_spearman_brown_gives_the_reliability_of_a_mean():
    assert spearman_brown(0.6, 2) == pytest.approx(2 * 0.6 / 1.6)
    assert spearman_brown(0.5, 1) == pytest.approx(0.5)
    assert spearman_brown(-0.1, 2) == 0.0  # clamped: no repeatable signal, reliability 0


def _noisy_seeds(true: np.ndarray, noise: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({s: true + noise * rng.standard_normal(len(true)) for s in (0, 1)})


def test_seed_reliability_recovers_the_planted_reliability():
    true = np.random.default_rng(0).standard_normal(400)
    by_seed = _noisy_seeds(true, noise=0.8, seed=1)  # single-seed reliability 1 / 1.64
    summary, replicates = seed_reliability(by_seed, method="pearson", bootstrap=500)
    assert summary["seed_lo"] < 1 / 1.64 < summary["seed_hi"]
    assert summary["reliability"] == pytest.approx(spearman_brown(summary["seed_r"], 2))
    assert replicates.shape == (500,)


def test_one_seed_leaves_the_noise_floor_unknown():
    summary, _ = seed_reliability(pd.DataFrame({0: np.arange(10.0)}), bootstrap=10)
    assert summary["seeds"] == 1 and np.isnan(summary["reliability"])


def test_corrected_correlation_recovers_a_planted_value_hidden_by_seed_noise():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(300)
    target = 0.9 * ref + np.sqrt(1 - 0.9**2) * rng.standard_normal(300)
    seeds = {"ref": _noisy_seeds(ref, 0.9, 3), "target": _noisy_seeds(target, 0.9, 4)}
    means = pd.DataFrame({k: v.mean(axis=1) for k, v in seeds.items()})
    counts = bootstrap_counts(np.random.default_rng(7), 300, 1000)
    raw = correlate(means, method="pearson", permutations=0, counts=counts)
    reliability, replicates = {}, {}
    for name, by_seed in seeds.items():
        summary, replicates[name] = seed_reliability(by_seed, method="pearson", counts=counts)
        reliability[name] = summary["reliability"]
    row = disattenuate(raw, reliability, replicates).iloc[0]
    assert row.hi < 0.9  # the raw interval misses the truth: noise attenuates it
    assert row.corrected_lo < 0.9 <= row.corrected_hi
    assert row.ceiling == pytest.approx(np.sqrt(reliability["ref"] * reliability["target"]))
    assert row.r_corrected == pytest.approx(row.r / row.ceiling)


def _two_noisy_datasets(n: int, rho: float, noise: float, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(n)
    target = rho * ref + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    return {
        "ref": _noisy_seeds(ref, noise, seed + 1),
        "target": _noisy_seeds(target, noise, seed + 2),
    }


def _corrected_row(seeds: dict[str, pd.DataFrame], resamples: int = 2000) -> pd.Series:
    n = len(seeds["ref"])
    counts = bootstrap_counts(np.random.default_rng(0), n, resamples)
    means = pd.DataFrame({k: v.mean(axis=1) for k, v in seeds.items()})
    raw = correlate(means, permutations=0, counts=counts)
    reliability, replicates = {}, {}
    for name, by_seed in seeds.items():
        summary, replicates[name] = seed_reliability(by_seed, counts=counts)
        reliability[name] = summary["reliability"]
    return disattenuate(raw, reliability, replicates).iloc[0]


def test_reliability_interval_keeps_the_resamples_whose_seed_r_is_not_positive():
    # Seed-to-seed r near 0.15 at n = 24: many resamples have r <= 0; dropping them (as a
    # NaN reliability did) lifted the lower end above 0, keeping them clamps it at 0.
    by_seed = _noisy_seeds(np.random.default_rng(5).standard_normal(24), 2.4, seed=6)
    counts = bootstrap_counts(np.random.default_rng(1), 24, 2000)
    summary, replicates = seed_reliability(by_seed, counts=counts)
    assert np.isfinite(replicates).all()
    assert (replicates == 0).mean() > 0.05
    assert summary["reliability_lo"] == 0.0


def test_corrected_r_is_not_capped_at_one():
    row = _corrected_row(_two_noisy_datasets(30, 0.95, 0.7, seed=3))
    assert row.corrected_hi > 1.0  # a capped interval would end at exactly 1


def test_corrected_interval_is_unbounded_where_the_ceiling_can_be_zero():
    row = _corrected_row(_two_noisy_datasets(24, 0.5, 3.0, seed=8))
    assert row.ceiling_lo == 0.0
    assert np.isinf(row.corrected_hi) or np.isinf(row.corrected_lo)


def test_shared_counts_give_one_draw_to_every_pair():
    data = pd.DataFrame(np.random.default_rng(4).standard_normal((40, 3)), columns=list("abc"))
    counts = bootstrap_counts(np.random.default_rng(9), 40, 50)
    together = correlate(data, permutations=0, counts=counts)
    alone = correlate(data[["a", "c"]], permutations=0, counts=counts)
    np.testing.assert_allclose(together.samples[together.row("a", "c")], alone.samples[0])


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_a_resample_of_a_pair_with_missing_rows_equals_scipy_on_the_drawn_rows(method):
    data = _frame(30, 0.5, seed=13, ties=True)
    data.iloc[[2, 7, 11], 1] = np.nan
    counts = bootstrap_counts(np.random.default_rng(3), 30, 5)
    result = correlate(data, method=method, permutations=0, counts=counts)
    have = data.notna().all(axis=1).to_numpy()
    for b in range(5):
        rows = np.repeat(np.flatnonzero(have), counts[b, have])
        x, y = data["ref"].to_numpy()[rows], data["target"].to_numpy()[rows]
        assert result.samples[0, b] == pytest.approx(SCIPY[method](x, y), abs=1e-9)


def test_monte_carlo_error_of_interval_ends_shrinks_with_the_resample_count():
    data = _frame(24, 0.5, seed=2)
    few = correlate(data, bootstrap=1000, permutations=0)
    many = correlate(data, bootstrap=16000, permutations=0)
    error_few = monte_carlo_error(few.samples, 0.95)
    error_many = monte_carlo_error(many.samples, 0.95)
    assert error_few.shape == (1, 2)
    assert 2.5 < float(error_few.mean() / error_many.mean()) < 6.5  # about sqrt(16) = 4


def test_monte_carlo_error_matches_the_spread_of_interval_ends_over_resampling_seeds():
    data = _frame(24, 0.5, seed=2)
    runs = [correlate(data, bootstrap=1000, permutations=0, seed=s) for s in range(40)]
    ends = np.array([[run.table["lo"].iloc[0], run.table["hi"].iloc[0]] for run in runs])
    estimates = np.array([monte_carlo_error(run.samples, 0.95)[0] for run in runs])
    spread = ends.std(axis=0, ddof=1)  # about 0.019 and 0.011 at n = 24
    np.testing.assert_allclose(estimates.mean(axis=0), spread, rtol=0.35)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_replicates_of_a_few_pairs_equal_those_of_the_whole_matrix(method):
    data = _frame(40, 0.5, seed=14, ties=True)
    data["c"] = np.round(np.random.default_rng(5).standard_normal(40), 1)
    values = data.to_numpy()
    counts = bootstrap_counts(np.random.default_rng(6), 40, 30)
    replicate = pearson_replicates if method == "pearson" else spearman_replicates
    left, right = np.array([0, 2]), np.array([2, 1])
    some = replicate(values, counts, (left, right))
    whole = replicate(values, counts)
    np.testing.assert_allclose(some, whole[:, left, right], atol=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_identical_columns_are_resampled_once_and_give_the_same_replicates(method):
    data = _frame(40, 0.5, seed=15, ties=True)
    data["copy"] = data["ref"]
    data["other"] = np.round(np.random.default_rng(6).standard_normal(40), 1)
    counts = bootstrap_counts(np.random.default_rng(7), 40, 30)
    pairs = [("ref", "target"), ("copy", "target"), ("ref", "copy"), ("other", "copy")]
    result = correlate(data, method=method, pairs=pairs, permutations=0, counts=counts)
    alone = correlate(data[["ref", "target"]], method=method, permutations=0, counts=counts)
    np.testing.assert_array_equal(result.samples[0], alone.samples[0])
    np.testing.assert_array_equal(result.samples[1], result.samples[0])
    np.testing.assert_allclose(result.samples[2], 1.0)
    for b in (0, 7):
        rows = np.repeat(np.arange(40), counts[b])
        x, y = data["other"].to_numpy()[rows], data["ref"].to_numpy()[rows]
        assert result.samples[3, b] == pytest.approx(SCIPY[method](x, y), abs=1e-12)
