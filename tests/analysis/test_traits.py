"""Trait effects and top-k agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.traits import TRAITS, top_agreement, trait_effects


def test_top_agreement_is_the_share_of_best_architectures_in_common():
    errors = pd.DataFrame(
        {"a": np.arange(20.0), "b": np.r_[np.arange(10.0), np.arange(10.0) - 100]}
    )
    # Best 10% = 2 architectures: a -> {0, 1}; b -> {10, 11}.
    table = top_agreement(errors, 0.1)
    assert table.loc["a", "b"] == 0.0
    errors["c"] = np.arange(20.0) * 2
    assert top_agreement(errors, 0.25).loc["a", "c"] == 1.0
    assert top_agreement(errors, 0.1).loc["a", "a"] == 1.0


def test_trait_effects_equal_spearman_of_trait_and_error(study):
    errors = study.errors()[["imagenet", "cifar10"]]
    table = trait_effects(study.architectures, errors, bootstrap=50, permutations=50)
    assert len(table) == 2 * len(TRAITS)
    row = table[(table["dataset"] == "cifar10") & (table["trait"] == "total_depth")].iloc[0]
    both = errors["cifar10"].notna()
    expected = sps.spearmanr(
        study.architectures.loc[both, "total_depth"], errors.loc[both, "cifar10"]
    ).statistic
    assert row["r"] == pytest.approx(expected)
    assert row["label"] == "total depth"


def test_planted_trait_effect_is_found(study):
    # The synthetic reference error falls with flops (its factor loads 0.6 on log flops).
    table = trait_effects(
        study.architectures, study.errors()[["imagenet"]], bootstrap=200, permutations=200
    )
    flops = table[table["trait"] == "flops_224"].iloc[0]
    assert flops["hi"] < 0 and flops["p"] < 0.01
