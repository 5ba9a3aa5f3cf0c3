"""How the report adapts to the study's size: past a threshold of architectures, datasets or
rows, figures show density instead of dots, a chosen set of panels or lines instead of all
of them, heatmaps in the order of a hierarchical clustering, and long tables their top and
bottom rows. The CSV tables always hold everything; the report says what it left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

if TYPE_CHECKING:
    from analysis.result import Analysis

DENSITY_ABOVE = 1_000  # points in a scatter panel above which it shows density (hexbin)
MAX_PANELS = 16  # per-dataset panels of a figure (scatter, EDF) at most
MAX_CURVES = 10  # targets drawn in the subset figure (and listed in its tables) at most
CLUSTER_ABOVE = 15  # datasets above which heatmaps follow a hierarchical clustering
MAX_ROWS = 40  # rows of an HTML table above which it shows its top and bottom rows


@dataclass(frozen=True)
class Layout:
    """What the figures and the page show of an analysis (`plan` chooses)."""

    density: bool  # scatter panels as hexagonal density instead of one dot per architecture
    panels: tuple[str, ...]  # datasets with a scatter panel against the reference, in order
    others: int  # datasets besides the reference (panels is all of them when it is as long)
    edf: tuple[str, ...]  # datasets with an error EDF panel: the reference and the panels
    curves: tuple[str, ...]  # targets drawn in the subset figure and listed in its tables
    order: tuple[str, ...]  # datasets in the heatmaps' order
    clustered: bool  # order is a hierarchical clustering's (else the report's order)
    rows: int = MAX_ROWS

    @property
    def panels_limited(self) -> bool:
        return len(self.panels) < self.others


def spread(values: pd.Series, count: int) -> list[str]:
    """`count` names of `values` spread evenly over its range from highest to lowest (the
    highest and the lowest always among them), in that order; names without a value come
    last and are chosen last. All of them, in their own order, when there are no more."""
    if len(values) <= count:
        return [str(name) for name in values.index]
    ranked = values.sort_values(ascending=False, na_position="last", kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, count)).astype(int))
    return [str(name) for name in ranked.index[picks]]


def cluster_order(matrix: pd.DataFrame) -> list[str]:
    """The names of a correlation matrix in the leaf order of an average-linkage clustering
    on the distance 1 - r (optimal leaf ordering: neighbours are as similar as the tree
    allows); a missing r counts as 0."""
    names = [str(n) for n in matrix.index]
    if len(names) < 3:
        return names
    values = np.nan_to_num(matrix.to_numpy(dtype=float), nan=0.0)
    distance = np.clip(1.0 - (values + values.T) / 2, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    return [names[i] for i in leaves_list(tree)]


def plan(a: Analysis) -> Layout:
    """The layout of an analysis's report: every choice depends on its size alone."""
    r = a.against.set_index("dataset")["r"]
    others = [d for d in a.errors.columns if d != a.reference]
    panels = spread(r.reindex(others), MAX_PANELS)
    matrix = a.correlations[a.method].matrix("r")
    clustered = len(matrix) > CLUSTER_ABOVE
    curves = list(dict.fromkeys(a.subset_curve["target"])) if len(a.subset_curve) else []
    return Layout(
        density=bool(a.errors.notna().sum().max() > DENSITY_ABOVE) if len(a.errors) else False,
        panels=tuple(panels),
        others=len(others),
        edf=(a.reference, *panels),
        curves=tuple(spread(r.reindex(curves), MAX_CURVES)),
        order=tuple(cluster_order(matrix) if clustered else matrix.index),
        clustered=clustered,
    )


def top_and_bottom(frame: pd.DataFrame, key: str, limit: int = MAX_ROWS) -> pd.DataFrame:
    """`frame` when it has at most `limit` rows; else its limit / 2 rows with the highest
    `key` and limit / 2 with the lowest, from highest to lowest (rows without a key last)."""
    if len(frame) <= limit:
        return frame
    ranked = frame.sort_values(key, ascending=False, na_position="last", kind="stable")
    return pd.concat([ranked.head(limit // 2), ranked.tail(limit - limit // 2)])
