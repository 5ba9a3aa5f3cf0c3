"""Subset curves and the proxy finder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.proxy import rank_proxies, recommend, subset_curve
from analysis.stats import Correlations


def _correlations(rows: list[tuple[str, str, float, float, float]]) -> Correlations:
    table = pd.DataFrame(rows, columns=["a", "b", "r", "lo", "hi"]).assign(
        method="spearman", n=100, p=0.01
    )
    names = tuple(dict.fromkeys([r[0] for r in rows] + [r[1] for r in rows]))
    return Correlations(table=table, samples=np.zeros((len(rows), 0)), names=names, confidence=0.95)


PAIRS = _correlations(
    [
        ("target", "imagenet", 0.40, 0.30, 0.50),
        ("target", "imagenet_k10", 0.78, 0.70, 0.84),
        ("target", "imagenet_k100", 0.80, 0.74, 0.86),
        ("target", "other", 0.10, -0.05, 0.25),
        ("imagenet", "imagenet_k10", 0.5, 0.4, 0.6),
        ("imagenet", "imagenet_k100", 0.7, 0.6, 0.8),
        ("imagenet", "other", 0.2, 0.1, 0.3),
        ("imagenet_k10", "imagenet_k100", 0.9, 0.85, 0.95),
        ("imagenet_k10", "other", 0.0, -0.1, 0.1),
        ("imagenet_k100", "other", 0.0, -0.1, 0.1),
    ]
)
SUBSETS = {"imagenet_k10": 10, "imagenet_k100": 100}
COSTS = pd.Series(
    {"imagenet": 1.0, "imagenet_k10": 0.01, "imagenet_k100": 0.1, "other": 0.005, "target": 0.02}
)


def test_subset_curve_has_one_point_per_k_including_the_whole_reference():
    curve = subset_curve(
        PAIRS, reference="imagenet", reference_classes=1000, subsets=SUBSETS, targets=["target"]
    )
    assert curve["k"].tolist() == [10, 100, 1000]
    assert curve["r"].tolist() == [0.78, 0.80, 0.40]
    assert curve["dataset"].tolist() == ["imagenet_k10", "imagenet_k100", "imagenet"]


def test_proxies_are_ranked_by_correlation_and_by_cost():
    ranked = rank_proxies(
        PAIRS, targets=["target"], costs=COSTS, reference="imagenet", subsets=SUBSETS
    )
    assert ranked["proxy"].tolist() == ["imagenet_k100", "imagenet_k10", "imagenet", "other"]
    assert ranked["rank_cost"].tolist() == [3, 2, 4, 1]
    assert ranked["kind"].tolist() == ["subset", "subset", "reference", "other"]
    assert ranked["within_best"].tolist() == [True, True, False, False]


def test_recommendation_is_the_cheapest_proxy_within_the_best_interval():
    ranked = rank_proxies(
        PAIRS, targets=["target"], costs=COSTS, reference="imagenet", subsets=SUBSETS
    )
    rec = recommend(ranked, reference="imagenet").iloc[0]
    assert rec["best"] == "imagenet_k100"
    assert rec["recommended"] == "imagenet_k10"  # 0.78 >= 0.74 and ten times cheaper
    assert rec["saving"] == pytest.approx(100.0)
    assert rec["reference_r"] == 0.40


def test_no_recommendation_when_even_the_best_interval_reaches_zero():
    weak = _correlations(
        [
            ("target", "imagenet", 0.1, -0.1, 0.3),
            ("target", "other", 0.05, -0.2, 0.3),
            ("imagenet", "other", 0.0, -0.1, 0.1),
        ]
    )
    ranked = rank_proxies(weak, targets=["target"], costs=COSTS, reference="imagenet", subsets={})
    rec = recommend(ranked, reference="imagenet").iloc[0]
    assert not rec["found"] and rec["recommended"] == ""
