"""The report's "Ranking before training" section: its CSV tables, its figure and its HTML,
drawn from a `zerocost.ScoreAnalysis`. Present only when the results hold scores."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # no stubs in the environment
from matplotlib.figure import Figure

from analysis.figures import _COLORS, _figure, _grid, _margins, _title
from analysis.html import _cell, _ci, _num, _p, _table
from analysis.html import _figure as _html_figure
from analysis.zerocost import BASELINE_LABELS, BASELINES, EXACT_UP_TO, ScoreAnalysis

KEY = "scores"
TITLE = "Ranking before training"


def score_tables(result: ScoreAnalysis | None) -> dict[str, pd.DataFrame]:
    """The section's CSV tables (name -> table); none without scores."""
    if result is None:
        return {}
    tables = {
        "scores_correlations": result.correlations,
        "scores_summary": result.summary,
        "scores_mantel": result.mantel,
        "scores_agreement": result.agreement,
    }
    if len(result.seeds):
        tables["scores_seeds"] = result.seeds
    return tables


def score_figure(result: ScoreAnalysis) -> Figure:
    """One panel per dataset: each score's signed r with its interval, baselines in grey."""
    table = result.correlations
    datasets = list(dict.fromkeys(table["dataset"]))
    scores = list(dict.fromkeys(table["score"]))
    rows, cols = _grid(len(datasets), 4)
    label = 0.065 * max(len(s) for s in scores) + 0.3
    panel = 0.22 * len(scores) + 0.6
    fig = _figure(2.9 * cols + label, panel * rows + 0.6 * (rows - 1) + 1.0)
    _margins(fig, label, 0.2, 0.4, 0.65, wspace=0.12, hspace=0.6 / panel)
    y = np.arange(len(scores))
    for i, name in enumerate(datasets):
        ax = fig.add_subplot(rows, cols, i + 1)
        part = table[table["dataset"] == name].set_index("score").reindex(scores)
        r = part["r"].to_numpy(dtype=float)
        lo, hi = part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float)
        err = np.nan_to_num(np.abs(np.vstack([r - lo, hi - r])))
        colors = ["#888888" if s in BASELINES else _COLORS[0] for s in scores]
        ax.errorbar(r, y, xerr=err, fmt="none", ecolor="#aaa", elinewidth=1)
        ax.scatter(r, y, c=colors, s=16, zorder=3)
        ax.axvline(0, color="#888", linewidth=0.8)
        ax.set_xlim(-1, 1)
        ax.set_xticks([-1, -0.5, 0, 0.5, 1], ["-1", "-0.5", "0", "0.5", "1"])
        ax.set_yticks(y, scores if i % cols == 0 else [""] * len(scores), fontsize=7)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    _title(
        fig,
        "Spearman r of each score with lower trained error, with intervals "
        "(right of 0: a higher score goes with lower error; grey: params and FLOPs)",
    )
    return fig


def _interval(lo: float, hi: float) -> str:
    return _ci(lo, hi).replace(" ", "\u00a0")  # an interval never breaks across lines


def _diff(row: pd.Series, baseline: str) -> str:
    if row["score"] == baseline:
        return "–"
    d, lo, hi = (row[f"vs_{baseline}{s}"] for s in ("_diff", "_lo", "_hi"))
    return f"{_num(d)} {_interval(lo, hi)}" if np.isfinite(d) else "–"


def _correlation_rows(result: ScoreAnalysis, floor: float) -> list[list[str]]:
    rows = []
    for _, r in result.correlations.iterrows():
        cls = "good" if r["lo"] > 0 else "bad" if r["hi"] < 0 else "muted"
        cells = [
            _cell(r["dataset"], cls="text"),
            _cell(r["score"], cls="text"),
            _cell(_num(int(r["n"])), int(r["n"])),
            _cell(_num(r["r"]), r["r"], cls),
            _cell(_interval(r["lo"], r["hi"])),
            _cell(_p(r["p"], floor), r["p"]),
        ]
        for baseline in BASELINES:
            cells += [_cell(_diff(r, baseline)), _cell(r[f"vs_{baseline}"] or "–", cls="text")]
        rows.append(cells)
    return rows


def _summary_rows(result: ScoreAnalysis) -> list[list[str]]:
    rows = []
    for _, r in result.summary.iterrows():
        cells = [
            _cell(r["score"], cls="text"),
            _cell("yes" if r["data_dependent"] else "no", cls="text"),
            _cell(_num(int(r["datasets"])), int(r["datasets"])),
            _cell(_num(r["median_r"]), r["median_r"]),
            _cell(f"{_num(r['min_r'])} to {_num(r['max_r'])}"),
        ]
        for baseline in BASELINES:
            counts = [r[f"{k}_vs_{baseline}"] for k in ("better", "tied", "worse")]
            text = "–" if r["score"] == baseline else " / ".join(str(int(c)) for c in counts)
            cells.append(_cell(text))
        rows.append(cells)
    return rows


def _rule(result: ScoreAnalysis) -> str:
    conf = f"{result.confidence:.0%}"
    readings = result.correlations[[f"vs_{b}" for b in BASELINES]].to_numpy()
    comparisons = int(np.count_nonzero(readings != ""))
    return (
        f'<div class="key">How to read the comparison with a baseline (params or FLOPs): a score '
        f"is <b>better than</b> it on a dataset when the {conf} interval of the paired difference "
        "r(score) &minus; r(baseline) lies above 0, <b>worse than</b> it when the interval lies "
        "below 0, and <b>not distinguishable from</b> it when the interval contains 0 (which does "
        "not show that the two are equal). Both correlations of a difference are computed on the "
        "same resamples of architectures, so the interval accounts for their covariation. Each "
        f"of the {comparisons} comparisons below is read on its own at {conf}; where no real "
        f"difference exists, about {1 - result.confidence:.0%} of them read better or worse by "
        "chance.</div>"
    )


def _intro(result: ScoreAnalysis) -> str:
    seeds = sorted({s for v in result.score_seeds.values() for s in v})
    sizes = sorted(set(result.minibatch_sizes.values()))
    images = " or ".join(map(str, sizes))
    seed_text = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return (
        "<p>Could the architectures have been ranked for a dataset without training on it? "
        "Training-free scores are computed once per architecture, dataset and seed, at the "
        f"network's initialisation on one minibatch of {images} images of the dataset "
        f"({seed_text}). r is the "
        "Spearman correlation over architectures of a score with trained error "
        f"(<code>{html.escape(result.metric)}</code>, mean over seeds of finished cells, as in "
        "the headline), signed so that a <b>positive r means a higher score goes with lower "
        f"error</b>; the {result.confidence:.0%} interval is a bootstrap percentile interval "
        f"(architectures resampled {result.bootstrap:,} times, the same resamples for every score "
        f"of a dataset) and p a two-sided permutation p-value ({result.permutations:,} "
        "permutations). The parameter count and the FLOPs of the network as trained on the "
        "dataset are the baselines every score has to beat. synflow, params and FLOPs do not "
        "look at the images; the other scores do. All numbers are in tables/scores_*.csv.</p>"
    )


def _seeds(result: ScoreAnalysis) -> str:
    if result.seeds.empty:
        seeds = sorted({s for v in result.score_seeds.values() for s in v})
        return (
            f"<p>Every score table holds one seed (seed {', '.join(map(str, seeds))}), so how "
            "much a score changes between initialisations cannot be measured here.</p>"
        )
    rows = [
        [
            _cell(r["dataset"], cls="text"),
            _cell(r["score"], cls="text"),
            _cell(_num(int(r["seeds"])), int(r["seeds"])),
            _cell(_num(int(r["n"])), int(r["n"])),
            _cell(_num(r["seed_r"]), r["seed_r"]),
            _cell(_interval(r["seed_lo"], r["seed_hi"])),
        ]
        for _, r in result.seeds.iterrows()
    ]
    headers = ["dataset", "score", "seeds", "architectures with all seeds", "seed-to-seed r"]
    return (
        "<h3>Between seeds</h3><p>The Spearman correlation of a score between two seeds "
        "(initialisation and minibatch) over architectures, averaged over pairs of seeds, with "
        "its interval. The correlations above use one seed's score (the lowest).</p>"
        + _table("scores-seeds", [*headers, "interval"], rows, text_cols=2)
    )


def _mantel(result: ScoreAnalysis) -> str:
    m = result.mantel
    if m.empty:
        return ""
    rows = [
        [
            _cell(r["score"], cls="text"),
            _cell(_num(int(r["datasets"])), int(r["datasets"])),
            _cell(_num(int(r["pairs"])), int(r["pairs"])),
            _cell(_num(r["statistic"]), r["statistic"]),
            _cell(_p(r["p"], r["smallest_p"]), r["p"]),
            _cell(f"{int(r['permutations']):,} {'(all: exact)' if r['exact'] else '(random)'}"),
            _cell(f"{r['smallest_p']:.2g}" if np.isfinite(r["smallest_p"]) else "–"),
        ]
        for _, r in m.iterrows()
    ]
    headers = ["score", "datasets", "dataset pairs", "Mantel r", "p (one-sided)"]
    headers += ["permutations", "smallest attainable p"]
    size = int(m["datasets"].max())
    if size < 3:
        return (
            "<h3>Across datasets</h3><p>Whether a score's agreement between datasets tracks "
            "the trained errors' agreement needs at least 3 datasets with scores (3 pairs); "
            f"this study has {size}.</p>"
        )
    pairs = size * (size - 1) // 2
    floor = float(m["smallest_p"].min())
    caveat = (
        " With so few datasets the test cannot reach p &lt; 0.05, however well the matrices agree."
        if floor >= 0.05
        else ""
    )
    return (
        "<h3>Across datasets</h3><p>Does a data-dependent score agree between two datasets where "
        "the trained errors agree? For each such score, the Spearman correlation of its values "
        "between every pair of datasets is set against the trained errors' correlation for the "
        "same pair, and the statistic is the Pearson correlation of the two over the pairs (a "
        "Mantel test). Its p-value is one-sided (a positive association) and comes from "
        "permuting the dataset labels of the score's matrix, rows and columns together: all "
        f"D! orders up to D = {EXACT_UP_TO} datasets (exact), else {result.permutations:,} "
        f"random ones. With D = {size} datasets there are D(D&minus;1)/2 = {pairs} pairs, and "
        f"they are not independent (each dataset enters {size - 1} of them), which is why "
        "datasets, not pairs, are permuted; the smallest p-value the test can give is in the "
        f"last column.{caveat} A low p says "
        "that the score's cross-dataset agreement tracks the trained one, not that the score "
        "ranks architectures well. Both matrices are in tables/scores_agreement.csv.</p>"
        + _table("scores-mantel", headers, rows)
    )


def score_section(result: ScoreAnalysis, figures: dict[str, Path], floor: float) -> str:
    """The section's HTML: what was computed, the rule, the summary, the figure, the
    per-dataset table, the seeds and the cross-dataset test. `floor`: the smallest
    permutation p-value of the correlations."""
    summary_headers = ["score", "sees the images", "datasets", "median r", "range of r"]
    summary_headers += [
        f"vs {BASELINE_LABELS[b]}: better / not distinguishable / worse" for b in BASELINES
    ]
    headers = ["dataset", "score", "architectures", "r", f"{result.confidence:.0%} interval"]
    headers += ["p"]
    for b in BASELINES:
        headers += [f"r − r({BASELINE_LABELS[b]}) [interval]", f"vs {BASELINE_LABELS[b]}"]
    return (
        _intro(result)
        + _rule(result)
        + _table("scores-summary", summary_headers, _summary_rows(result), text_cols=2)
        + _html_figure(
            figures.get(KEY),
            "Dots: signed Spearman r of each score with lower error; bars: intervals; grey: "
            "the params and FLOPs baselines.",
        )
        + _table("scores", headers, _correlation_rows(result, floor), text_cols=2)
        + _seeds(result)
        + _mantel(result)
    )
