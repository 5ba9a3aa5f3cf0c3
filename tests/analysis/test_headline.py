"""The headline on shared draws: reliabilities and correlations from the same resamples of
architectures (missing cells included), as many resamples as keep the Monte-Carlo error of
the interval ends at most 0.005, Kendall on fewer where it is costly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.frame import StudyResults
from analysis.headline import (
    HEADLINE_MC_ERROR,
    MAX_HEADLINE_RESAMPLES,
    headline,
    kendall_resamples,
    resamples_needed,
)
from analysis.report import analyze
from analysis.stats import bootstrap_counts, correlate, percentile_interval, seed_reliability
from analysis.synthetic import SyntheticDataset, synthetic_study

DATASETS = [
    SyntheticDataset("ref", 10, 32, 5000, 1000, rho=1.0, seed_noise=2.0),
    SyntheticDataset("target", 10, 32, 5000, 1000, rho=0.6, seed_noise=3.0),
    SyntheticDataset("other", 10, 32, 5000, 1000, rho=-0.3, seed_noise=1.0),
]


@pytest.fixture(scope="module")
def gappy() -> StudyResults:
    """30 architectures, 3 seeds, a fifth of the cells missing: few architectures have
    every seed, so a reliability's rows differ from a correlation's."""
    results, _ = synthetic_study(
        architectures=30, seeds=3, datasets=DATASETS, reference="ref", missing=0.2, seed=5
    )
    return StudyResults(results)


def test_resamples_needed_grows_with_the_square_of_the_error_ratio():
    assert resamples_needed(1000, 0.004) == 1000  # already within the goal
    assert resamples_needed(1000, 0.01) == 5000  # 4x, a fifth to spare, whole thousands
    assert resamples_needed(1000, 0.5) == MAX_HEADLINE_RESAMPLES


def test_kendall_uses_fewer_resamples_only_where_they_cost_too_much():
    assert kendall_resamples(24, 10, 1000) == 1000
    assert kendall_resamples(2000, 24, 1000) == 1000
    assert kendall_resamples(5000, 39, 1000) == 435  # n^1.5 per resample and pair
    assert kendall_resamples(20000, 39, 1000) == 200  # never fewer


def test_reliabilities_use_the_correlations_draws_with_missing_cells(gappy):
    errors = gappy.errors()
    counts = bootstrap_counts(np.random.default_rng(0), len(errors), 300)
    table = correlate(errors, counts=counts, permutations=0)
    head = headline(
        gappy,
        errors,
        table,
        reference="ref",
        targets=["target", "other"],
        counts=counts,
        rng=np.random.default_rng(1),
        metric="top1_err",
    )
    assert np.array_equal(head.counts[:300], counts)  # more draws are added after them
    by_seed = gappy.seed_errors("target")
    complete = int(by_seed.notna().all(axis=1).sum())
    assert complete < len(errors.dropna())  # the reliability has fewer rows than r
    seeds = gappy.query(dataset="target", status="done").groupby("arch_id").size().mean()
    assert 2 < seeds < 3  # the mean of 2 or 3 seeds: Spearman-Brown with their mean count
    _, expected = seed_reliability(by_seed, counts=head.counts, seeds_averaged=seeds)
    np.testing.assert_array_equal(head.replicates["target"], expected)
    row = head.against.set_index("b").loc["target"]
    ceiling = np.sqrt(head.replicates["ref"] * head.replicates["target"])
    r_samples = head.correlations.samples[head.correlations.row("ref", "target")]
    with np.errstate(divide="ignore"):  # a ceiling of 0: an unbounded corrected r
        lo, hi = percentile_interval(r_samples / ceiling, 0.95)
    assert (row["corrected_lo"], row["corrected_hi"]) == pytest.approx((float(lo), float(hi)))


def test_analyze_shares_its_draws_between_r_and_the_reliabilities(gappy):
    result = analyze(gappy, reference="ref", bootstrap=300, permutations=50, seed=7)
    rng = np.random.default_rng(7)
    errors = gappy.errors()[["ref", "other", "target"]]
    counts = bootstrap_counts(rng, len(errors), 300)
    table = correlate(errors, counts=counts, permutations=50, seed=7)
    head = headline(
        gappy,
        errors,
        table,
        reference="ref",
        targets=result.targets,
        counts=counts,
        rng=rng,
        metric="top1_err",
    )
    pd.testing.assert_frame_equal(result.noise, head.noise)
    assert result.headline_bootstrap == len(head.counts)
    got = result.against.set_index("dataset").loc["target", ["lo", "hi", "ceiling_lo"]]
    want = head.against.set_index("b").loc["target", ["lo", "hi", "ceiling_lo"]]
    np.testing.assert_allclose(got.to_numpy(dtype=float), want.to_numpy(dtype=float))


def test_headline_resamples_until_its_interval_ends_are_stable_to_0_005(gappy):
    result = analyze(gappy, reference="ref", bootstrap=500, permutations=50)
    assert result.headline_bootstrap > 500
    assert result.headline_mc_error <= HEADLINE_MC_ERROR
    assert result.mc_error > HEADLINE_MC_ERROR  # the tables on 500 resamples: stated, larger
    matrix = result.correlations["spearman"].get("ref", "target")
    row = result.against.set_index("dataset").loc["target"]
    assert row["r"] == matrix["r"] and row["p"] == matrix["p"]
    assert (row["lo"], row["hi"]) != (matrix["lo"], matrix["hi"])
