"""Subset curves and the proxy finder: candidates compared with the best by a paired
bootstrap of the difference of their correlations on the same resamples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.proxy import RECOMMENDED, rank_proxies, recommend, subset_curve
from analysis.stats import Correlations, correlate, paired_difference

COSTS = pd.Series({"imagenet": 1.0, "best": 0.5, "cand": 0.01, "other": 0.005, "target": 0.02})


def _correlations(rows: list[tuple[str, str, float, float, float]]) -> Correlations:
    table = pd.DataFrame(rows, columns=["a", "b", "r", "lo", "hi"]).assign(
        method="spearman", n=100, p=0.01
    )
    names = tuple(dict.fromkeys([r[0] for r in rows] + [r[1] for r in rows]))
    return Correlations(table=table, samples=np.zeros((len(rows), 0)), names=names, confidence=0.95)


def test_subset_curve_has_one_point_per_k_including_the_whole_reference():
    pairs = _correlations(
        [
            ("target", "imagenet", 0.40, 0.30, 0.50),
            ("target", "imagenet_k10", 0.78, 0.70, 0.84),
            ("target", "imagenet_k100", 0.80, 0.74, 0.86),
            ("imagenet", "imagenet_k10", 0.5, 0.4, 0.6),
            ("imagenet", "imagenet_k100", 0.7, 0.6, 0.8),
            ("imagenet_k10", "imagenet_k100", 0.9, 0.85, 0.95),
        ]
    )
    corrected = pairs.table.assign(
        ceiling=[0.8, 0.5, 0.9, 0.5, 0.6, 0.7], corrected_lo=0.1, corrected_hi=1.2
    ).assign(r_corrected=lambda t: t["r"] / t["ceiling"])
    curve = subset_curve(
        pairs,
        reference="imagenet",
        reference_classes=1000,
        subsets={"imagenet_k10": 10, "imagenet_k100": 100},
        targets=["target"],
        corrected=corrected,
        reliability={"imagenet": 0.9, "imagenet_k10": 0.3, "imagenet_k100": 0.6},
    )
    assert curve["k"].tolist() == [10, 100, 1000]
    assert curve["r"].tolist() == [0.78, 0.80, 0.40]
    assert curve["dataset"].tolist() == ["imagenet_k10", "imagenet_k100", "imagenet"]
    assert curve["reliability"].tolist() == [0.3, 0.6, 0.9]  # each point's own dataset
    assert curve["ceiling"].tolist() == [0.5, 0.9, 0.8]
    assert curve["r_corrected"].tolist() == pytest.approx([0.78 / 0.5, 0.8 / 0.9, 0.4 / 0.8])


def _study(seed: int, candidate: str) -> Correlations:
    """A target, its best proxy and a candidate over 24 architectures, resampled together.
    `independent`: the candidate's error is unrelated to the best's beyond the target;
    `near`: the candidate is the best plus a little noise."""
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(24)
    best = 0.8 * target + 0.6 * rng.standard_normal(24)
    cand = (
        0.5 * target + np.sqrt(0.75) * rng.standard_normal(24)
        if candidate == "independent"
        else best + 0.35 * rng.standard_normal(24)
    )
    other = rng.standard_normal(24)
    data = pd.DataFrame({"target": target, "best": best, "cand": cand, "other": other})
    return correlate(data, bootstrap=2000, permutations=0, seed=1)


def _ranked(correlations: Correlations) -> pd.DataFrame:
    return rank_proxies(
        correlations, targets=["target"], costs=COSTS, reference="best", subsets={}
    ).set_index("proxy")


@pytest.mark.parametrize(("seed", "candidate"), [(0, "independent"), (10, "near")])
def test_a_candidate_is_within_the_best_when_the_paired_difference_interval_reaches_zero(
    seed, candidate
):
    correlations = _study(seed, candidate)
    ranked = _ranked(correlations)
    diff, lo, hi = paired_difference(correlations, ("target", "best"), ("target", "cand"))
    row = ranked.loc["cand"]
    assert (row["diff"], row["diff_lo"], row["diff_hi"]) == pytest.approx((diff, lo, hi))
    assert bool(row["within_best"]) == (lo <= 0)
    # The old rule (candidate's r reaches the lower end of the best's marginal interval)
    # decides these two the other way: it ignores that both correlations share the target.
    best = correlations.get("target", "best")
    assert (row["r"] >= best["lo"]) != bool(row["within_best"])
    assert ranked.loc["best", "within_best"] and ranked.loc["best", "diff"] == 0


def test_recommendation_is_the_cheapest_clear_candidate_not_distinguishable_from_the_best():
    ranked = _ranked(_study(14, "independent"))
    rec = recommend(ranked.reset_index(), reference="best").iloc[0]
    assert rec["best"] == "best"
    assert ranked.loc["cand", "within_best"] and ranked.loc["cand", "lo"] > 0
    assert rec["recommended"] == "cand"  # 50 times cheaper, not told apart from the best
    assert rec["saving"] == pytest.approx(COSTS["best"] / COSTS["cand"])


def test_a_candidate_whose_own_interval_reaches_zero_is_not_recommended():
    ranked = _ranked(_study(0, "independent"))
    assert ranked.loc["cand", "within_best"] and ranked.loc["cand", "lo"] <= 0
    rec = recommend(ranked.reset_index(), reference="best").iloc[0]
    assert rec["recommended"] == "best"


def test_no_recommendation_leaves_the_recommended_columns_empty(tmp_path: Path):
    rng = np.random.default_rng(3)
    data = pd.DataFrame(rng.standard_normal((24, 3)), columns=["target", "best", "other"])
    ranked = _ranked(correlate(data, bootstrap=500, permutations=0, seed=2))
    rec = recommend(ranked.reset_index(), reference="best")
    row = rec.iloc[0]
    assert not row["found"] and row["recommended"] == ""
    assert rec[list(RECOMMENDED)].isna().all(axis=None)
    rec.to_csv(tmp_path / "recommendations.csv", index=False)
    header, line = (tmp_path / "recommendations.csv").read_text().splitlines()
    written = dict(zip(header.split(","), line.split(","), strict=True))
    assert {written[c] for c in RECOMMENDED} == {""}
    assert written["best_r"] != ""
