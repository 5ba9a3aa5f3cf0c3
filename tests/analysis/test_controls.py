"""Subsets against their size-matched controls, the subset curve's reliabilities, and what
the report and the demo's table say about them and about the noise ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.controls import HELPS, SAME, match_controls, reading
from analysis.frame import StudyResults
from analysis.html import _ci, render
from analysis.report import analyze
from analysis.stats import paired_difference
from analysis.summary import summary_text
from analysis.synthetic import SyntheticDataset, default_datasets, synthetic_study

TARGETS = ("cifar10", "concrete", "insects")


@pytest.fixture(scope="module")
def result():
    datasets = [
        d
        for d in default_datasets(subset_ks=(10, 100), controls=True)
        if d.parent or d.name in ("imagenet", *TARGETS)
    ]
    study, _ = synthetic_study(architectures=40, seeds=2, datasets=datasets, seed=2)
    return analyze(StudyResults(study), bootstrap=300, permutations=100)


@pytest.fixture(scope="module")
def page(result) -> str:
    return render(result, {})  # the page without figures: test_report checks those


def test_a_control_matches_the_subset_with_the_nearest_number_of_images_within_5_percent():
    controls = {"p_n1000": 1000, "p_n1040": 1040, "p_n5000": 5000}
    assert match_controls({"p_k2": 1030, "p_k5": 4800, "p_k9": 9000}, controls) == {
        "p_k2": "p_n1040",
        "p_k5": "p_n5000",
    }


def test_reading_follows_from_what_the_difference_interval_excludes():
    assert reading(0.02, 0.3) == HELPS
    assert reading(-0.1, 0.3) == SAME
    assert reading(-0.3, -0.01) == "fewer classes hurt beyond fewer images"


def test_controls_are_neither_targets_nor_subsets(result):
    assert result.controls == {"imagenet_n13000": 13_000, "imagenet_n130000": 130_000}
    assert result.subsets == {"imagenet_k10": 10, "imagenet_k100": 100}
    assert result.targets == list(TARGETS)
    roles = result.datasets.set_index("dataset")["role"]
    assert roles["imagenet_n13000"] == "control" and roles["imagenet_k10"] == "subset"


def test_each_subset_is_compared_with_its_control_on_the_same_resamples(result):
    table = result.subset_controls
    assert len(table) == len(TARGETS) * 2
    correlations = result.correlations[result.method]
    for row in table.itertuples():
        assert row.control == f"imagenet_n{row.subset_images}"
        classes = paired_difference(
            correlations, (row.target, row.subset), (row.target, row.control)
        )
        images = paired_difference(
            correlations, (row.target, row.control), (row.target, "imagenet")
        )
        assert (row.classes_effect, row.classes_lo, row.classes_hi) == pytest.approx(classes)
        assert (row.images_effect, row.images_lo, row.images_hi) == pytest.approx(images)
        assert row.classes_effect == pytest.approx(row.r_subset - row.r_control)
        assert row.reading == reading(row.classes_lo, row.classes_hi)


def test_each_point_of_the_subset_curve_carries_its_reliability_and_corrected_r(result):
    reliability = result.noise.set_index("dataset")["reliability"]
    curve = result.subset_curve
    assert set(curve["dataset"]) == {"imagenet", "imagenet_k10", "imagenet_k100"}
    np.testing.assert_allclose(curve["reliability"], reliability[curve["dataset"]].to_numpy())
    np.testing.assert_allclose(curve["r_corrected"], curve["r"] / curve["ceiling"])
    expected = np.sqrt(reliability[curve["dataset"]].to_numpy() * reliability[curve["target"]])
    np.testing.assert_allclose(curve["ceiling"], expected)


def test_the_report_shows_the_controls_and_each_points_reliability(result, page):
    assert 'id="subset-controls"' in page
    assert "Does dropping classes help beyond dropping images?" in page
    assert page.count(result.subset_controls["reading"].iloc[0]) >= 1
    assert "reliability of its mean" in page


def test_a_report_without_controls_says_what_it_cannot_tell():
    datasets = [
        SyntheticDataset("imagenet", 1000, 224, 1_281_167, 50_000, rho=1.0),
        SyntheticDataset("imagenet_k10", 10, 224, 13_000, 500, rho=0.7, parent="imagenet"),
        SyntheticDataset("cifar10", 10, 32, 50_000, 10_000, rho=0.5),
    ]
    study, _ = synthetic_study(architectures=20, seeds=2, datasets=datasets, curves=False)
    result = analyze(StudyResults(study), bootstrap=100, permutations=20)
    assert result.subset_controls.empty
    html = render(result, {})
    assert "No size-matched controls" in html and "cannot tell whether" in html


def test_the_headline_explains_the_noise_ceiling_without_overclaiming(page):
    assert "the highest r two datasets can show" not in page
    assert "capped at 1" not in page and "agree as far as the noise lets us tell" not in page
    assert "One study's r can exceed it by sampling error" in page
    assert "A reading follows from what the intervals exclude" in page  # the rule, stated


def test_an_unbounded_corrected_interval_reads_as_infinite():
    assert _ci(0.15, np.inf) == "[0.15, ∞]"
    assert _ci(-np.inf, -0.2) == "[−∞, -0.20]"
    assert _ci(np.nan, 0.3) == "–"


def test_the_demo_table_compares_each_r_with_its_ceiling_not_with_a_single_seed_r(result):
    text = summary_text(result)
    assert "noise floor: seed-to-seed correlation" not in text
    against = result.against.set_index("dataset")
    for target in result.targets:
        line = next(x for x in text.splitlines() if x.startswith(target))
        row = against.loc[target]
        assert line.split()[1:4] == [
            f"{row['r']:+.2f}",
            f"[{row['lo']:+.2f},",
            f"{row['hi']:+.2f}]",
        ]
        assert line.endswith(f"{row['ceiling']:.2f}")
    reliability = result.noise.set_index("dataset")["reliability"]
    assert f"imagenet {reliability['imagenet']:.2f}, " in text
    assert f"{result.headline_mc_error:.3f} (Monte-Carlo standard error)" in text
    assert "not distinguishable from the best at this sample size" in text
    for row in result.subset_controls.itertuples():
        assert f"  {row.target}: {row.subset} vs {row.control}: {row.classes_effect:+.2f}" in text


def test_the_report_states_the_exact_chance_of_top_overlap_and_when_k_is_too_small(result, page):
    assert result.top_k == {"n": 40.0, "k": 4.0, "chance": 0.1, "too_few": 1.0}
    assert "the best k = 4 of n = 40 architectures" in page
    assert "k/n = 0.100 on average (exact" in page
    assert "With k = 4 a share can only be 0, 0.25, 0.5, 0.75, 1: too few" in page


def test_trait_stars_follow_the_false_discovery_rate_not_the_raw_p(result, page):
    assert "Benjamini-Hochberg over all" in page
    traits = result.traits
    assert ((traits["p"] < 0.05) & (traits["q"] >= 0.05)).any()  # starred before, not now
    starred = page.count("*</td>")
    assert starred == int((traits["q"] < 0.05).sum())
