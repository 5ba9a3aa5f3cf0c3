"""Does dropping classes help beyond dropping images? Each subset of the reference is paired
with its size-matched control (the reference restricted to the subset's number of training
images, every class kept), and per target the two correlations are compared on the same
resamples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats import Correlations, paired_difference

MATCH_TOLERANCE = 0.05  # a control matches a subset within 5 % of its training images
HELPS = "fewer classes help beyond fewer images"
HURTS = "fewer classes hurt beyond fewer images"
SAME = "not distinguishable from fewer images alone"
COLUMNS = (
    "target",
    "subset",
    "k",
    "control",
    "subset_images",
    "control_images",
    "r_subset",
    "subset_lo",
    "subset_hi",
    "r_control",
    "control_lo",
    "control_hi",
    "classes_effect",
    "classes_lo",
    "classes_hi",
    "images_effect",
    "images_lo",
    "images_hi",
    "reading",
)


def match_controls(
    subset_images: Mapping[str, int], control_images: Mapping[str, int]
) -> dict[str, str]:
    """subset -> the control whose number of training images is closest to the subset's,
    within MATCH_TOLERANCE of it; subsets without one are left out."""
    out = {}
    for subset, images in subset_images.items():
        gaps = {c: abs(n - images) for c, n in control_images.items()}
        if gaps:
            control = min(gaps, key=lambda c: (gaps[c], c))
            if gaps[control] <= MATCH_TOLERANCE * images:
                out[subset] = control
    return out


def reading(lo: float, hi: float) -> str:
    """What the interval of r(target, subset) - r(target, control) excludes."""
    if np.isfinite(lo) and lo > 0:
        return HELPS
    if np.isfinite(hi) and hi < 0:
        return HURTS
    return SAME if np.isfinite(lo) else "no interval"


def subset_controls(
    correlations: Correlations,
    *,
    reference: str,
    targets: Sequence[str],
    subsets: Mapping[str, int],
    matches: Mapping[str, str],
    images: Mapping[str, int],
) -> pd.DataFrame:
    """Per target and matched subset: r with the subset and with its control, the effect of
    fewer classes at the same images (r_subset - r_control) and of fewer images alone
    (r_control - r_reference), each with the percentile interval of the paired difference
    over the shared resamples."""
    rows = []
    for target in targets:
        for subset, control in matches.items():
            if target in (subset, control):
                continue
            s, c = correlations.get(target, subset), correlations.get(target, control)
            classes = paired_difference(correlations, (target, subset), (target, control))
            size = paired_difference(correlations, (target, control), (target, reference))
            rows.append(
                (
                    target,
                    subset,
                    subsets.get(subset),
                    control,
                    images.get(subset),
                    images.get(control),
                    s["r"],
                    s["lo"],
                    s["hi"],
                    c["r"],
                    c["lo"],
                    c["hi"],
                    *classes,
                    *size,
                    reading(classes[1], classes[2]),
                )
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
