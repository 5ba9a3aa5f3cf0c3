"""The report's readings of a correlation with the reference: what its interval excludes,
and whether the seed-to-seed noise leaves room for better agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd

POSITIVE = "clearly positive"
NEGATIVE = "clearly negative"
UNCLEAR = "no clear relation"
RULE = (
    "A reading follows from what the intervals exclude. <b>clearly positive</b>: the interval "
    "of r lies above 0; <b>clearly negative</b>: below 0; <b>no clear relation</b>: it contains "
    "0. For a clearly positive r the corrected interval adds: <b>below perfect agreement</b> "
    "when it lies below 1 (the rankings differ by more than seed noise explains); "
    "<b>perfect agreement not excluded</b> when it reaches 1 (which is not evidence that the "
    "rankings agree, only that the noise does not let us rule it out); <b>noise ceiling "
    "unknown</b> with one seed."
)


def sign_class(lo: float, hi: float) -> str:
    """clearly positive / clearly negative / no clear relation, from an interval."""
    if np.isfinite(lo) and lo > 0:
        return POSITIVE
    if np.isfinite(hi) and hi < 0:
        return NEGATIVE
    return UNCLEAR


def verdict(row: pd.Series) -> str:
    """One reading of a correlation with the reference, by the rule in RULE."""
    if not np.isfinite(row["r"]) or not np.isfinite(row["lo"]):
        return "too few architectures in common"
    sign = sign_class(row["lo"], row["hi"])
    if sign != POSITIVE:
        return sign
    hi = row.get("corrected_hi", np.nan)
    if np.isnan(hi):
        return f"{sign}; noise ceiling unknown"
    if hi < 1:
        return f"{sign}; below perfect agreement"
    return f"{sign}; perfect agreement not excluded"
