"""Which cheaper dataset ranks architectures most like a target: subset curves (correlation
with the reference restricted to k classes) and the proxy finder (correlation vs cost)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats import Correlations

CURVE_COLUMNS = ("target", "dataset", "k", "n", "r", "lo", "hi", "p")


def subset_curve(
    correlations: Correlations,
    *,
    reference: str,
    reference_classes: int,
    subsets: Mapping[str, int],
    targets: Sequence[str],
) -> pd.DataFrame:
    """Per target: its correlation with the reference restricted to k classes, for every k
    in the study (the subsets, and the full reference at k = its number of classes)."""
    rows = []
    points = [(name, k) for name, k in subsets.items()] + [(reference, reference_classes)]
    for target in targets:
        for dataset, k in points:
            if dataset == target:
                continue
            pair = correlations.get(target, dataset)
            rows.append(
                {
                    "target": target,
                    "dataset": dataset,
                    "k": int(k),
                    "n": int(pair["n"]),
                    "r": pair["r"],
                    "lo": pair["lo"],
                    "hi": pair["hi"],
                    "p": pair["p"],
                }
            )
    frame = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    return frame.sort_values(["target", "k", "dataset"], kind="stable").reset_index(drop=True)


def rank_proxies(
    correlations: Correlations,
    *,
    targets: Sequence[str],
    costs: pd.Series,
    reference: str,
    subsets: Mapping[str, int],
) -> pd.DataFrame:
    """Every candidate proxy of every target: the reference, its subsets and any other
    dataset, with correlation, interval and cost (GPU-hours per training), ranked both ways.
    `within_best` marks candidates whose r reaches the lower bound of the best one's interval."""
    rows = []
    for target in targets:
        for proxy in correlations.names:
            if proxy == target:
                continue
            pair = correlations.get(target, proxy)
            kind = "reference" if proxy == reference else "subset" if proxy in subsets else "other"
            rows.append(
                {
                    "target": target,
                    "proxy": proxy,
                    "kind": kind,
                    "k": subsets.get(proxy),
                    "n": int(pair["n"]),
                    "r": pair["r"],
                    "lo": pair["lo"],
                    "hi": pair["hi"],
                    "p": pair["p"],
                    "gpu_hours": float(costs.get(proxy, np.nan)),
                }
            )
    frame = pd.DataFrame(
        rows, columns=["target", "proxy", "kind", "k", "n", "r", "lo", "hi", "p", "gpu_hours"]
    )
    if frame.empty:
        return frame.assign(rank_r=[], rank_cost=[], within_best=[])
    frame["k"] = frame["k"].astype("Int64")
    frame = frame.sort_values(["target", "r"], ascending=[True, False], kind="stable")
    grouped = frame.groupby("target", sort=False)
    frame["rank_r"] = grouped["r"].rank(ascending=False, method="min").astype("Int64")
    frame["rank_cost"] = grouped["gpu_hours"].rank(ascending=True, method="min").astype("Int64")
    best_lo = grouped["lo"].transform("first")
    frame["within_best"] = (frame["r"] >= best_lo).fillna(False).astype(bool)
    return frame.reset_index(drop=True)


def recommend(ranked: pd.DataFrame, *, reference: str) -> pd.DataFrame:
    """Per target: the best proxy, and the cheapest one whose correlation lies within the
    best one's interval (ties in cost go to the higher r), compared with the reference.
    When even the best one's interval reaches 0, no dataset ranks architectures like the
    target: `recommended` is empty and the target has to be trained on itself."""
    rows = []
    for target, group in ranked.groupby("target", sort=False):
        valid = group[np.isfinite(group["r"])]
        if valid.empty:
            continue
        best = valid.iloc[0]
        eligible = valid[valid["within_best"] & np.isfinite(valid["gpu_hours"])]
        pick = (
            eligible.sort_values(["gpu_hours", "r"], ascending=[True, False], kind="stable").iloc[0]
            if len(eligible)
            else best
        )
        found = bool(best["lo"] > 0) if np.isfinite(best["lo"]) else bool(best["r"] > 0)
        ref = valid[valid["proxy"] == reference]
        ref_r = float(ref["r"].iloc[0]) if len(ref) else np.nan
        ref_cost = float(ref["gpu_hours"].iloc[0]) if len(ref) else np.nan
        rows.append(
            {
                "target": target,
                "best": best["proxy"],
                "best_r": best["r"],
                "best_lo": best["lo"],
                "best_hi": best["hi"],
                "found": found,
                "recommended": pick["proxy"] if found else "",
                "recommended_r": pick["r"],
                "recommended_lo": pick["lo"],
                "recommended_hi": pick["hi"],
                "recommended_gpu_hours": pick["gpu_hours"],
                "reference_r": ref_r,
                "reference_gpu_hours": ref_cost,
                "saving": ref_cost / pick["gpu_hours"] if pick["gpu_hours"] > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)
