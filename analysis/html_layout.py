"""What the page says about the choices analysis.layout made for a large study: the figures'
captions (dots or density, which panels, which order) and the notes under tables that show
only their top and bottom rows. A small study's page reads as it always did."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from analysis.layout import Layout, top_and_bottom

if TYPE_CHECKING:
    from analysis.result import Analysis


def rows(frame: pd.DataFrame, key: str, layout: Layout) -> pd.DataFrame:
    """The rows of `frame` a table shows: all, or its top and bottom rows by `key`."""
    return top_and_bottom(frame, key, layout.rows)


def rows_note(total: int, key: str, what: str, csv: str, layout: Layout) -> str:
    """The sentence under a table that shows only its top and bottom rows ("" otherwise)."""
    if total <= layout.rows:
        return ""
    high, low = layout.rows // 2, layout.rows - layout.rows // 2
    return (
        f"<p class='muted'>Shown: the {high} {what} with the highest {key} and the {low} with the "
        f"lowest, of {total:,}; tables/{csv} has every row.</p>"
    )


def scatter_caption(a: Analysis, layout: Layout) -> str:
    if layout.density:
        text = (
            "Each panel shows how many architectures fall in each hexagon (one logarithmic colour "
            f"scale for all panels): {len(a.errors):,} dots would hide each other."
        )
    else:
        text = "Each dot is one architecture."
    text += " Panel titles give r with its interval."
    if layout.panels_limited:
        text += (
            f" {len(layout.panels)} of the {layout.others} datasets are drawn, spread over their r "
            f"with {a.reference} from highest to lowest; tables/errors.csv has every "
            "architecture's error on every dataset."
        )
    return text


def heatmap_caption(a: Analysis, layout: Layout) -> str:
    text = f"{a.method.capitalize()} correlation of error between every pair of datasets."
    if layout.clustered:
        text += (
            " Rows and columns follow a hierarchical clustering (average linkage on 1 - r), so "
            f"datasets that rank architectures alike sit together; {a.reference} is in bold."
        )
    if len(layout.order) > 30:
        text += f" The values are in tables/matrix_{a.method}.csv."
    return text


def agreement_caption(a: Analysis, layout: Layout) -> str:
    text = f"Share of the best {a.top_fraction:.0%} architectures two datasets have in common."
    if layout.clustered:
        text += " Datasets in the order of the correlation heatmap."
    return text


def edf_caption(layout: Layout) -> str:
    text = "F(e): share of architectures with error below e, as pycls plots design spaces."
    if layout.panels_limited:
        text += (
            f" Drawn: the reference and the {len(layout.panels)} datasets of the headline's "
            "figure; the table above has every dataset's mean, median and best error."
        )
    return text


def curve_targets(layout: Layout, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a subset table (curve or controls) for the targets the figure draws."""
    if frame.empty:
        return frame
    return frame[frame["target"].isin(layout.curves)]


def curve_caption(a: Analysis, layout: Layout) -> str:
    text = (
        "Lines: correlation with the target; bands: intervals; open squares: size-matched controls."
    )
    targets = a.subset_curve["target"].nunique()
    if len(layout.curves) < targets:
        text += (
            f" {len(layout.curves)} of the {targets} targets are drawn (and listed in the tables "
            f"below), spread over their r with {a.reference} from highest to lowest; "
            "tables/subset_curves.csv and tables/subset_controls.csv have every target."
        )
    return text
