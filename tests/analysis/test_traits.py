"""Trait effects and top-k agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.traits import TRAITS, top_agreement, top_chance, top_overlap, trait_effects


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
    flops = table[table["trait"] == "flops"].iloc[0]
    assert flops["hi"] < 0 and flops["p"] < 0.01


def test_complexity_traits_are_counted_as_trained_on_each_dataset(study):
    errors = study.errors()[["imagenet", "cifar10"]]
    as_trained = {c: study.as_trained(c) for c in ("flops", "params")}
    table = trait_effects(
        study.architectures, errors, as_trained=as_trained, bootstrap=20, permutations=20
    ).set_index(["dataset", "trait"])
    both = errors["cifar10"].notna()
    trained = as_trained["params"].loc[both, "cifar10"]
    expected = sps.spearmanr(trained, errors.loc[both, "cifar10"]).statistic
    at_224 = sps.spearmanr(
        study.architectures.loc[both, "params_224"], errors.loc[both, "cifar10"]
    ).statistic
    assert table.loc[("cifar10", "params"), "r"] == pytest.approx(expected)
    assert table.loc[("cifar10", "params"), "counted"] == "as trained"
    assert abs(expected - at_224) > 1e-3  # a 10-class head, not 1,000: another ranking


def test_complexity_falls_back_to_224_px_where_results_have_no_as_trained_count(study):
    errors = study.errors()[["imagenet"]]
    table = trait_effects(study.architectures, errors, bootstrap=20, permutations=20)
    row = table.set_index("trait").loc["flops"]
    assert row["counted"] == "224 px"
    expected = sps.spearmanr(
        study.architectures["flops_224"], errors["imagenet"], nan_policy="omit"
    )
    assert row["r"] == pytest.approx(expected.statistic)


def test_q_values_are_benjamini_hochberg_over_the_whole_table_as_scipy_computes_them(study):
    errors = study.errors()[["imagenet", "cifar10", "concrete"]]
    table = trait_effects(study.architectures, errors, bootstrap=20, permutations=200)
    expected = sps.false_discovery_control(table["p"].to_numpy(), method="bh")
    np.testing.assert_allclose(table["q"], expected)
    assert (table["q"] >= table["p"]).all() and (table["q"] > table["p"]).any()


def test_top_overlap_states_the_exact_chance_level_and_scipy_hypergeometric_p():
    rng = np.random.default_rng(0)
    errors = pd.DataFrame(rng.standard_normal((24, 3)), columns=["a", "b", "c"])
    errors.iloc[:3, 2] = np.nan
    table = top_overlap(errors, 0.1).set_index(["a", "b"])
    row = table.loc[("a", "b")]
    assert (row["n"], row["k"]) == (24, 2)
    assert row["chance"] == pytest.approx(2 / 24)  # 0.083, not the fraction 0.10
    assert row["p"] == pytest.approx(sps.hypergeom.sf(row["shared"] - 1, 24, 2, 2))
    assert table.loc[("a", "c"), "n"] == 21 and table.loc[("a", "c"), "chance"] == pytest.approx(
        2 / 21
    )
    assert top_chance(table.reset_index()) == {  # the most common n: two pairs of 21
        "n": 21.0,
        "k": 2.0,
        "chance": pytest.approx(2 / 21),
        "too_few": 1.0,
    }
    many = pd.DataFrame(rng.standard_normal((500, 2)), columns=["a", "b"])
    assert top_chance(top_overlap(many, 0.1))["too_few"] == 0.0
