"""Two sections of the HTML report: fewer classes of the reference (the subset curve with
each point's reliability and corrected r, and the size-matched controls) and the method
note (what each interval is, how missing cells are handled, how well the intervals cover
the truth in calibration)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import html_layout as scaled
from analysis.controls import HELPS, HURTS
from analysis.headline import MAX_HEADLINE_RESAMPLES
from analysis.html import _cell, _ci, _figure, _num, _table
from analysis.layout import Layout

if TYPE_CHECKING:
    from analysis.result import Analysis


def subsets(a: Analysis, figures: dict[str, Path], layout: Layout) -> str:
    if a.subset_curve.empty:
        return f"<p class='muted'>The study has no class subsets of {html.escape(a.reference)}.</p>"
    images = a.datasets.set_index("dataset")["num_train"]
    rows = [
        [
            _cell(r.target, cls="text"),
            _cell(f"{r.dataset} (k={r.k})", cls="text"),
            _cell(_num(images.get(r.dataset)), images.get(r.dataset)),
            _cell(_num(r.r), r.r),
            _cell(_ci(r.lo, r.hi)),
            _cell(_num(r.reliability), r.reliability),
            _cell(_num(r.r_corrected), r.r_corrected),
            _cell(_ci(r.corrected_lo, r.corrected_hi)),
        ]
        for r in scaled.curve_targets(layout, a.subset_curve).itertuples()
    ]
    headers = [
        "target",
        "reference restricted to",
        "train images",
        "r",
        "interval",
        "reliability of its mean",
        "corrected r",
        "interval",
    ]
    text = (
        "<p>Each point is the target's correlation with the reference restricted to k of its classes. "
        "Fewer classes also means fewer training images and, often, noisier rankings: a point whose "
        "reliability (of the mean over seeds) is low is pulled towards 0 by noise alone, so each point "
        "shows it, and the corrected r (r over the noise ceiling of the pair) beside it. Whether fewer "
        "classes help beyond fewer images only a size-matched control can tell (below).</p>"
    )
    figure = _figure(figures.get("subsets"), scaled.curve_caption(a, layout))
    table = _table("subset-curves", headers, rows, text_cols=2)
    return text + figure + table + _controls(a, layout)


def _controls(a: Analysis, layout: Layout) -> str:
    reference = html.escape(a.reference)
    if a.subset_controls.empty:
        return (
            f"<p class='muted'>No size-matched controls: the study has no {reference} restricted to a "
            'subset\'s number of training images with every class kept (kind "control", e.g. '
            f"{reference}_n&lt;images&gt;), so it cannot tell whether a subset ranks architectures "
            "more like a target because it has fewer classes or because it has fewer images.</p>"
        )
    rows = [
        [
            _cell(r.target, cls="text"),
            _cell(f"{r.subset} (k={r.k})", cls="text"),
            _cell(r.control, cls="text"),
            _cell(_num(r.subset_images), r.subset_images),
            _cell(_num(r.r_subset), r.r_subset),
            _cell(_num(r.r_control), r.r_control),
            _cell(_num(r.classes_effect), r.classes_effect),
            _cell(_ci(r.classes_lo, r.classes_hi)),
            _cell(_num(r.images_effect), r.images_effect),
            _cell(_ci(r.images_lo, r.images_hi)),
            _cell(r.reading, cls="text " + _tone(r.reading)),
        ]
        for r in scaled.curve_targets(layout, a.subset_controls).itertuples()
    ]
    headers = [
        "target",
        "subset",
        "control",
        "train images",
        "r subset",
        "r control",
        "fewer classes",
        "interval",
        "fewer images",
        "interval",
        "reading",
    ]
    return (
        "<h3>Does dropping classes help beyond dropping images?</h3>"
        f"<p>Each subset is paired with its size-matched control: {reference} restricted to the "
        "subset's number of training images with every class kept. <i>fewer classes</i> is r(target, "
        "subset) - r(target, control): the effect of dropping classes at the same number of images; "
        f"<i>fewer images</i> is r(target, control) - r(target, {reference}): the effect of dropping "
        f"images alone. Intervals are {a.confidence:.0%} paired-bootstrap intervals (both "
        "correlations on the same resamples of architectures). The reading follows from what the "
        "fewer-classes interval excludes.</p>"
        + _table("subset-controls", headers, rows, text_cols=3)
    )


def _tone(reading: str) -> str:
    return "good" if reading == HELPS else "bad" if reading == HURTS else "muted"


# Coverage of the report's 95 % intervals on studies drawn from a generating model with
# known parameters: the table of benchmarks/calibration.py in docs/benchmarks.md.
CALIBRATION = (
    "<p><b>Calibration.</b> On 200 simulated studies per design (24, 100 and 500 architectures "
    "with 1 to 3 seeds, normal qualities and seed noise; benchmarks/calibration.py, the table is in "
    "docs/benchmarks.md), the 95 % intervals held the population value of what they estimate in "
    "94-97 % of studies for the Spearman r (Pearson 92-95 %, Kendall 94-97 %), 91.5-97.5 % for "
    "the paired differences (proxies, subsets against controls), 93-97 % for the reliability and "
    "94-97 % for the corrected r. The reliability and the corrected r derive from noisy "
    "correlations (the reliability is clamped at 0; the corrected r divides by a noisy ceiling), so "
    "their coverage was measured rather than assumed: it held in those studies, but skewed noise "
    "or very few architectures can do worse. For rank correlations the corrected r of two "
    "perfectly agreeing noise-free rankings is slightly below 1 (0.9985 in those studies), and "
    "<i>below perfect agreement</i> was read for them in 0-5.5 % of studies. A true correlation of 0 was read as clearly positive in 2-4.5 % of studies and as "
    "clearly negative in 0-4 %.</p>"
)


def method(a: Analysis) -> str:
    return (
        "<p><b>Intervals.</b> Every interval is a percentile bootstrap interval over architectures. "
        "All tables use the same draws of architectures: the headline's first "
        f"{a.bootstrap:,} resamples are every other table's, so differences and corrections pair "
        "resample by resample. <b>Missing cells.</b> An architecture's error on a dataset is the mean "
        "over its finished seeds; each pair of datasets uses the architectures both have (n in the "
        "tables), and each resample keeps, of its draws, those architectures; a dataset's "
        "seed-to-seed r and reliability use the architectures that have every seed. No resample is "
        "dropped: a reliability whose seed-to-seed r is at or below 0 counts as 0, and a corrected r "
        "whose ceiling is 0 is unbounded. <b>Monte-Carlo error.</b> The headline used "
        f"{a.headline_bootstrap:,} resamples, drawn to bring the standard error of its interval ends "
        f"from resampling alone to at most {a.headline_target:g} ({MAX_HEADLINE_RESAMPLES:,} "
        f"resamples at most): it is {_num(a.headline_mc_error, 3)}, and "
        f"{_num(a.corrected_mc_error, 3)} for the corrected r's finite ends.</p>" + CALIBRATION
    )
