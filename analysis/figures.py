"""The report's figures as PNG files, drawn with matplotlib's Agg canvas (no display, no
pyplot state): scatter grid (dots, or density for many architectures), correlation heatmap,
subset curves, error EDFs, trait effects; analysis.layout chooses what each one shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.colors
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from analysis.layout import Layout
    from analysis.result import Analysis

DPI = 96
_PAGE_WIDTH = 10.5  # inches of figure that the page shows at full size (96 dpi)
_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
# Density panels: the upper part of "Blues", so a hexagon of one architecture still shows.
_DENSITY = matplotlib.colors.ListedColormap(
    matplotlib.colormaps["Blues"](np.linspace(0.3, 1.0, 256)), name="density"
)


def _figure(width: float, height: float, *, constrained: bool = False) -> Figure:
    # Constrained layout costs seconds on grids of many axes: grids place axes by margins.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _margins(
    fig: Figure,
    left: float,
    right: float,
    bottom: float,
    top: float,
    wspace: float = 0.3,
    hspace: float = 0.5,
) -> None:
    """Margins in inches, converted to the figure fractions matplotlib wants."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )


def _title(fig: Figure, text: str) -> None:
    fig.suptitle(text, fontsize=10, y=1 - 0.12 / fig.get_size_inches()[1], va="top")


def _grid(count: int, columns: int = 4) -> tuple[int, int]:
    cols = max(1, min(columns, count))
    return math.ceil(count / cols), cols


def _interval(row: pd.Series) -> str:
    if not np.isfinite(row["r"]):
        return "r n/a"
    if np.isfinite(row["lo"]):
        return f"r = {row['r']:.2f} [{row['lo']:.2f}, {row['hi']:.2f}]"
    return f"r = {row['r']:.2f}"


def scatter_grid(
    errors: pd.DataFrame,
    reference: str,
    against: pd.DataFrame,
    panels: Sequence[str] | None = None,
    *,
    density: bool = False,
) -> Figure:
    """Reference error (x) against each dataset's error (y), one panel per dataset of
    `panels` (default: every other dataset). With `density`, each panel shows how many
    architectures fall in each hexagon (one colour scale for all panels) instead of one
    dot per architecture."""
    others = list(panels) if panels is not None else [d for d in errors.columns if d != reference]
    rows, cols = _grid(len(others))
    fig = _figure(3.0 * cols + (0.9 if density else 0.0), 2.5 * rows + 0.6)
    _margins(fig, 0.6, 1.05 if density else 0.15, 0.5, 0.9, wspace=0.3, hspace=0.6)
    stats = against.set_index("dataset")
    x_all = errors[reference].to_numpy(dtype=float)
    drawn = []
    for i, name in enumerate(others):
        ax = fig.add_subplot(rows, cols, i + 1)
        y = errors[name].to_numpy(dtype=float)
        both = np.isfinite(x_all) & np.isfinite(y)
        if density:
            drawn.append(
                ax.hexbin(x_all[both], y[both], gridsize=28, mincnt=1, cmap=_DENSITY, linewidths=0)
            )
        else:
            ax.plot(x_all[both], y[both], "o", ms=2.4, alpha=0.5, color=_COLORS[0], mew=0)
        ax.set_title(
            f"{name}\n{_interval(stats.loc[name])}" if name in stats.index else name, fontsize=8
        )
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("error (%)", fontsize=8)
        if i >= len(others) - cols:
            ax.set_xlabel(f"{reference} error (%)", fontsize=8)
    if drawn:
        _shared_scale(fig, drawn, "architectures per hexagon")
    _title(fig, f"Test error of every architecture: {reference} vs each dataset")
    return fig


def _shared_scale(fig: Figure, collections: list[Any], label: str) -> None:
    """One logarithmic colour scale for every panel's counts, with its bar at the right."""
    counts = [np.ma.getdata(c.get_array()) for c in collections]
    top = max((float(v.max()) for v in counts if v.size), default=1.0)
    norm = matplotlib.colors.LogNorm(vmin=1, vmax=max(top, 2.0))
    for collection in collections:
        collection.set_norm(norm)
    width, height = fig.get_size_inches()
    bar = fig.add_axes((1 - 0.75 / width, 0.5 / height, 0.15 / width, 1 - 1.4 / height))
    scale = fig.colorbar(collections[0], cax=bar)
    scale.set_label(label, fontsize=8)
    scale.set_ticks(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    scale.ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
    scale.ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    bar.tick_params(labelsize=7)


def heatmap(
    matrix: pd.DataFrame,
    title: str,
    *,
    vmin: float = -1.0,
    cmap: str = "RdBu_r",
    order: Sequence[str] | None = None,
    highlight: str | None = None,
) -> Figure:
    """A square table of values in [-1, 1] (or [0, 1]) with the numbers written in (up to
    30 rows), rows and columns in `order` (default: the matrix's), the `highlight` label in
    bold. Cells shrink with many rows (to 0.2 in) so the figure fits the page, one label
    per row."""
    if order is not None:
        matrix = matrix.loc[list(order), list(order)]
    size = len(matrix)
    label = 0.065 * max((len(str(n)) for n in matrix.index), default=1) + 0.3
    cell = min(0.42, max(0.2, (_PAGE_WIDTH - label - 1.3) / max(size, 1)))
    side = max(3.0, cell * size)
    fig = _figure(side + label + 1.3, side + label + 0.5)
    _margins(fig, label, 1.2, label, 0.4)
    ax = fig.add_subplot()
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, vmin=vmin, vmax=1.0, cmap=cmap)
    ax.set_xticks(range(size), matrix.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(size), matrix.index, fontsize=7)
    for text in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        if highlight is not None and text.get_text() == highlight:
            text.set_fontweight("bold")
    if size <= 30:
        _write_values(ax, values)
    fig.colorbar(image, ax=ax, shrink=0.7, fraction=0.05, pad=0.03)
    ax.set_title(title, fontsize=10)
    return fig


def _write_values(ax: Axes, values: np.ndarray) -> None:
    for i in range(len(values)):
        for j in range(len(values)):
            if np.isfinite(values[i, j]):
                light = abs(values[i, j]) > 0.6
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if light else "black",
                )


def _controls(ax: Axes, k: Any, r: Any, color: Any, label: str | None = None) -> None:
    # Just right of the subset's k (log axis), so the two points do not hide each other.
    ax.scatter(
        np.asarray(k, dtype=float) * 1.12,
        r,
        marker="s",
        s=22,
        facecolors="none",
        edgecolors=[color],
        label=label,
    )


def subset_curves(
    curve: pd.DataFrame,
    reference: str,
    controls: pd.DataFrame | None = None,
    targets: Sequence[str] | None = None,
) -> Figure:
    """Correlation of each target (default: every target of `curve`) with the reference
    restricted to k classes, against k; `controls` (subset_controls rows) adds each
    size-matched control at its subset's k."""
    targets = list(targets) if targets is not None else list(dict.fromkeys(curve["target"]))
    fig = _figure(8.5 if len(targets) > 6 else 7.5, 4.8, constrained=True)
    ax = fig.add_subplot()
    palette = matplotlib.colormaps["tab20" if len(targets) > len(_COLORS) else "tab10"]
    for i, target in enumerate(targets):
        points = (
            curve[curve["target"] == target]
            .groupby("k")
            .agg(r=("r", "mean"), lo=("lo", "mean"), hi=("hi", "mean"))
        )
        color = palette(i % palette.N)
        style = "-" if i < palette.N else "--"
        ax.plot(points.index, points["r"], style, marker="o", ms=4, color=color, label=target)
        ax.fill_between(
            points.index, points["lo"], points["hi"], color=color, alpha=0.12, linewidth=0
        )
        if controls is not None and not controls.empty:
            own = controls[controls["target"] == target]
            _controls(ax, own["k"], own["r_control"], color)
    if controls is not None and not controls.empty:
        _controls(ax, [], [], "#555", "size-matched control\n(the subset's images,\nevery class)")
    ax.set_xscale("log")
    ks = sorted(set(curve["k"]))
    ax.set_xticks(ks, [str(int(k)) for k in ks])  # the k of the study, not powers of ten
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axhline(0, color="#888", linewidth=0.8)
    ax.set_xlabel(f"classes k of {reference} kept (log scale; the largest k is all of {reference})")
    ax.set_ylabel("rank correlation with target error")
    ax.set_ylim(-1, 1)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        ncol=1 if len(targets) <= 14 else 2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.set_title(
        f"Does training on fewer {reference} classes rank architectures more like the target?",
        fontsize=10,
    )
    return fig


def error_edfs(errors: pd.DataFrame, names: Sequence[str] | None = None) -> Figure:
    """Empirical distribution of error per dataset (default: every one), as pycls draws
    design-space EDFs: F(e) = share of architectures with error below e."""
    names = list(names) if names is not None else list(errors.columns)
    rows, cols = _grid(len(names), 5)
    fig = _figure(2.6 * cols, 2.1 * rows + 0.5)
    _margins(fig, 0.55, 0.15, 0.45, 0.65, wspace=0.3, hspace=0.75)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = np.sort(errors[name].dropna().to_numpy(dtype=float))
        if len(values):
            ax.step(
                values, np.arange(1, len(values) + 1) / len(values), where="post", color=_COLORS[0]
            )
        ax.set_title(f"{name} (n={len(values)})", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("cumulative prob.", fontsize=7)
        ax.set_xlabel("error (%)", fontsize=7)
    _title(fig, "Error EDF of the sampled architectures on each dataset")
    return fig


def trait_effects(traits: pd.DataFrame) -> Figure:
    """One panel per trait: each dataset's correlation of error with it, with interval."""
    labels = list(dict.fromkeys(traits["label"]))
    datasets = list(dict.fromkeys(traits["dataset"]))
    rows, cols = _grid(len(labels), 3)
    label = 0.065 * max((len(d) for d in datasets), default=1) + 0.3
    panel = 0.2 * len(datasets) + 0.6
    fig = _figure(3.3 * cols + label, panel * rows + 0.6 * (rows - 1) + 0.95)
    _margins(fig, label, 0.2, 0.35, 0.6, wspace=0.1, hspace=0.6 / panel)
    for i, label in enumerate(labels):
        ax = fig.add_subplot(rows, cols, i + 1)
        part = traits[traits["label"] == label].set_index("dataset").reindex(datasets)
        y = np.arange(len(datasets))
        r = part["r"].to_numpy(dtype=float)
        err = np.abs(
            np.vstack([r - part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float) - r])
        )
        colors = [_COLORS[1] if v > 0 else _COLORS[0] for v in np.nan_to_num(r)]
        ax.errorbar(r, y, xerr=np.nan_to_num(err), fmt="none", ecolor="#999", elinewidth=1)
        ax.scatter(r, y, c=colors, s=14, zorder=3)
        ax.axvline(0, color="#888", linewidth=0.8)
        ax.set_xlim(-1, 1)
        ax.set_xticks([-1, -0.5, 0, 0.5, 1], ["-1", "-0.5", "0", "0.5", "1"])
        ax.set_yticks(y, datasets if i % cols == 0 else [""] * len(datasets), fontsize=7)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    _title(fig, "Correlation of error with each trait (blue: more of it, lower error)")
    return fig


def write_figures(
    analysis: Analysis, folder: Path, layout: Layout | None = None
) -> dict[str, Path]:
    """Draw every figure of the report into `folder` as `layout` (default: `plan`) says;
    returns name -> PNG path."""
    from analysis.layout import plan

    layout = layout or plan(analysis)
    folder.mkdir(parents=True, exist_ok=True)
    method = analysis.method
    highlight = analysis.reference if layout.clustered else None
    figures = {
        "scatter": scatter_grid(
            analysis.errors,
            analysis.reference,
            analysis.against,
            layout.panels,
            density=layout.density,
        ),
        "heatmap": heatmap(
            analysis.correlations[method].matrix("r"),
            f"{method.capitalize()} correlation of test error",
            order=layout.order,
            highlight=highlight,
        ),
        "edf": error_edfs(analysis.errors, layout.edf),
    }
    if not analysis.subset_curve.empty:
        figures["subsets"] = subset_curves(
            analysis.subset_curve, analysis.reference, analysis.subset_controls, layout.curves
        )
    if not analysis.traits.empty:
        figures["traits"] = trait_effects(analysis.traits)
    figures["top_agreement"] = heatmap(
        analysis.top_agreement,
        f"Share of the best {analysis.top_fraction:.0%} architectures in common",
        vmin=0.0,
        cmap="viridis",
        order=layout.order,
        highlight=highlight,
    )
    if analysis.scores is not None:
        from analysis.zerocost_report import KEY, score_figure

        figures[KEY] = score_figure(analysis.scores)
    paths = {}
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        paths[name] = path
    return paths
