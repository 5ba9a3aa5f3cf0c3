"""The report at scale: a study with many architectures and datasets gets density panels, a
chosen set of panels and curves, heatmaps in clustering order and top-and-bottom tables; a
small study keeps its dots, every panel and the report's order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from analysis.figures import heatmap, scatter_grid
from analysis.frame import open_results
from analysis.html import render
from analysis.layout import (
    CLUSTER_ABOVE,
    DENSITY_ABOVE,
    MAX_CURVES,
    MAX_PANELS,
    cluster_order,
    plan,
    spread,
    top_and_bottom,
)
from analysis.report import Analysis, analyze, write_report
from analysis.synthetic import SyntheticDataset, default_datasets, synthetic_results

ARCHITECTURES = 1_100  # above DENSITY_ABOVE
PAGE_BOUND = 2_000_000  # bytes: the page of this study (measured about 1.0 MB)


def _extra(i: int) -> SyntheticDataset:
    return SyntheticDataset(f"extra{i}", 10, 32, 20_000, 5_000, rho=0.9 * np.sin(i), small=0.2)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, dict]:
    """1,100 architectures on 18 datasets (ImageNet, 4 subsets, 13 targets), one seed:
    few resamples, the headline not extended (only the layout is under test here)."""
    folder = tmp_path_factory.mktemp("large")
    datasets = default_datasets() + [_extra(i) for i in range(5)]
    synthetic_results(
        folder / "results.h5",
        architectures=ARCHITECTURES,
        seeds=1,
        datasets=datasets,
        curves=False,
        seed=2,
    )
    result = analyze(open_results(folder), bootstrap=40, permutations=0, headline_error=1.0, seed=0)
    return result, write_report(result, folder / "report")


def test_sizes_of_the_test_studies_sit_on_either_side_of_the_thresholds(large, analysis):
    assert len(large[0].errors) > DENSITY_ABOVE >= len(analysis.errors)
    assert len(large[0].errors.columns) - 1 > MAX_PANELS >= len(analysis.errors.columns) - 1
    assert len(large[0].errors.columns) > CLUSTER_ABOVE >= len(analysis.errors.columns)
    assert large[0].subset_curve["target"].nunique() == 13 > MAX_CURVES


def test_a_large_study_gets_density_a_spread_of_panels_and_clustered_heatmaps(large):
    result = large[0]
    layout = plan(result)
    r = result.against.set_index("dataset")["r"]
    assert layout.density and layout.clustered
    assert (len(layout.panels), layout.others) == (MAX_PANELS, 17)
    drawn = r[list(layout.panels)].to_numpy()
    assert np.all(np.diff(drawn) <= 0)  # highest to lowest
    assert drawn[0] == r.max() and drawn[-1] == r.min()
    assert layout.edf == (result.reference, *layout.panels)
    assert layout.order == tuple(cluster_order(result.correlations["spearman"].matrix("r")))
    assert layout.order != tuple(result.errors.columns)
    assert len(layout.curves) == MAX_CURVES and set(layout.curves) < set(result.targets)


def test_a_small_study_keeps_dots_every_panel_and_the_report_order(analysis):
    layout = plan(analysis)
    names = tuple(analysis.errors.columns)
    assert not layout.density and not layout.clustered and not layout.panels_limited
    assert layout.panels == names[1:] and layout.edf == names and layout.order == names
    assert layout.curves == tuple(analysis.targets)


def test_density_panels_count_every_architecture_on_one_colour_scale(large):
    result = large[0]
    layout = plan(result)
    fig = scatter_grid(result.errors, result.reference, result.against, layout.panels, density=True)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == MAX_PANELS
    norms = set()
    for ax, name in zip(panels, layout.panels, strict=True):
        (hexes,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
        both = result.errors[[result.reference, name]].notna().all(axis=1).sum()
        assert hexes.get_array().sum() == both == ARCHITECTURES
        assert not [line for line in ax.lines if line.get_marker() == "o"]
        norms.add(id(hexes.norm))
    assert len(norms) == 1 and len(fig.axes) == MAX_PANELS + 1  # and one colour bar


def test_a_small_study_draws_one_dot_per_architecture(analysis):
    fig = scatter_grid(analysis.errors, analysis.reference, analysis.against)
    for ax, name in zip(fig.axes, analysis.errors.columns[1:], strict=True):
        (dots,) = ax.lines
        both = analysis.errors[[analysis.reference, name]].notna().all(axis=1).sum()
        assert len(dots.get_xdata()) == both and not ax.collections


def test_clustering_puts_datasets_that_rank_alike_next_to_each_other():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((200, 2))
    columns = {
        "a": base[:, 0],
        "b": base[:, 1],
        "c": base[:, 0] + 0.3 * rng.standard_normal(200),
        "d": base[:, 1] + 0.3 * rng.standard_normal(200),
        "e": base[:, 0] + 0.5 * rng.standard_normal(200),
    }
    order = cluster_order(pd.DataFrame(columns).corr())
    first = [order.index(n) for n in "ace"]
    assert sorted(first) in ([0, 1, 2], [2, 3, 4])
    assert set(order) == set("abcde")


def test_the_heatmap_draws_rows_in_the_given_order_with_the_reference_in_bold():
    matrix = pd.DataFrame(np.eye(3) + 0.1, index=list("xyz"), columns=list("xyz"))
    fig = heatmap(matrix, "t", order=["z", "x", "y"], highlight="x")
    ax = fig.axes[0]
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == ["z", "x", "y"]
    assert [t.get_fontweight() for t in labels] == ["normal", "bold", "normal"]
    np.testing.assert_allclose(ax.images[0].get_array(), matrix.loc[list("zxy"), list("zxy")])


def test_spread_keeps_the_extremes_and_steps_evenly_between():
    values = pd.Series(np.arange(10.0), index=[f"d{i}" for i in range(10)])
    assert spread(values, 4) == ["d9", "d6", "d3", "d0"]
    assert spread(values, 20) == list(values.index)  # all, in their own order
    with_gap = pd.Series([0.5, np.nan, 0.9, -0.2], index=list("abcd"))
    assert spread(with_gap, 3) == ["c", "d", "b"]


def test_a_long_table_keeps_its_top_and_bottom_rows():
    frame = pd.DataFrame({"name": [f"t{i}" for i in range(50)], "r": np.linspace(-1, 1, 50)})
    shown = top_and_bottom(frame, "r", 40)
    assert len(shown) == 40
    assert shown["name"].tolist() == [f"t{i}" for i in range(49, 29, -1)] + [
        f"t{i}" for i in range(19, -1, -1)
    ]
    assert top_and_bottom(frame.head(40), "r", 40)["name"].tolist() == frame["name"][:40].tolist()


def test_the_page_lists_the_top_and_bottom_targets_and_says_how_many(large):
    result = large[0]
    layout = dataclasses.replace(plan(result), rows=6)
    page = render(result, {}, layout)
    table = page.split('<table id="headline">')[1].split("</table>")[0]
    ranked = result.headline.sort_values("r", ascending=False)["dataset"].tolist()
    shown = [row.split("</td>")[0].split(">")[-1] for row in table.split("<tr>")[2:]]
    assert shown == ranked[:3] + ranked[-3:]
    assert "the 3 targets with the highest r and the 3 with the lowest, of 13" in page


def test_the_large_report_stays_small_and_says_what_it_left_out(large):
    result, files = large
    page = Path(files["report"]).read_text(encoding="utf-8")
    assert Path(files["report"]).stat().st_size < PAGE_BOUND
    assert f"{ARCHITECTURES:,} dots would hide each other" in page
    assert f"{MAX_PANELS} of the 17 datasets are drawn" in page
    assert f"{MAX_CURVES} of the 13 targets are drawn" in page
    assert "follow a hierarchical clustering" in page
    curve = page.split('<table id="subset-curves">')[1].split("</table>")[0]
    assert curve.count("<tr>") == 1 + MAX_CURVES * 5  # header, then k = 10, 50, 100, 500, 1000
    drawn = set(plan(result).curves)
    assert all(f">{t}<" in curve for t in drawn)
    assert not any(f">{t}<" in curve for t in set(result.targets) - drawn)
    csv = pd.read_csv(files["tables"]["subset_curves"])
    assert csv["target"].nunique() == 13  # the CSV keeps every target
