"""Which cheaper dataset ranks architectures most like a target: subset curves (correlation
with the reference restricted to k classes) and the proxy finder (correlation vs cost)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats import Correlations, percentile_interval

CURVE_COLUMNS = (
    "target",
    "dataset",
    "k",
    "n",
    "r",
    "lo",
    "hi",
    "p",
    "reliability",
    "ceiling",
    "r_corrected",
    "corrected_lo",
    "corrected_hi",
)
_CORRECTED = ("ceiling", "r_corrected", "corrected_lo", "corrected_hi")
# What recommendations.csv leaves empty (NaN) when no candidate is recommended.
RECOMMENDED = (
    "recommended_r",
    "recommended_lo",
    "recommended_hi",
    "recommended_gpu_hours",
    "saving",
)


def subset_curve(
    correlations: Correlations,
    *,
    reference: str,
    reference_classes: int,
    subsets: Mapping[str, int],
    targets: Sequence[str],
    corrected: pd.DataFrame | None = None,
    reliability: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per target: its correlation with the reference restricted to k classes, for every k
    in the study (the subsets, and the full reference at k = its number of classes), with
    the reliability of the point's dataset (mean over seeds) and, from `corrected` (the
    rows of `disattenuate`), the noise ceiling and the corrected r of each point."""
    rows = []
    points = [(name, k) for name, k in subsets.items()] + [(reference, reference_classes)]
    extra = _pairs(corrected)
    for target in targets:
        for dataset, k in points:
            if dataset == target:
                continue
            pair = correlations.get(target, dataset)
            more = extra.get((target, dataset)) or extra.get((dataset, target)) or {}
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
                    "reliability": (reliability or {}).get(dataset, np.nan),
                    **{c: more.get(c, np.nan) for c in _CORRECTED},
                }
            )
    frame = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    return frame.sort_values(["target", "k", "dataset"], kind="stable").reset_index(drop=True)


def _pairs(corrected: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, float]]:
    if corrected is None or corrected.empty:
        return {}
    values = corrected[["a", "b", *_CORRECTED]].to_dict(orient="records")
    return {(str(v["a"]), str(v["b"])): v for v in values}


def rank_proxies(
    correlations: Correlations,
    *,
    targets: Sequence[str],
    costs: pd.Series,
    reference: str,
    subsets: Mapping[str, int],
    controls: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Every candidate proxy of every target: the reference, its subsets and controls and
    any other dataset, with correlation, interval and cost (GPU-hours per training), ranked
    both ways. `diff` is r(best) - r(candidate) with the percentile interval of that
    difference over the shared resamples (paired: resample b of both correlations is the
    same draw of architectures); `within_best` marks candidates whose difference interval
    reaches 0: not distinguishable from the best at this sample size."""
    rows = []
    for target in targets:
        for proxy in correlations.names:
            if proxy == target:
                continue
            pair = correlations.get(target, proxy)
            rows.append(
                {
                    "target": target,
                    "proxy": proxy,
                    "kind": _kind(proxy, reference, subsets, controls or {}),
                    "k": subsets.get(proxy),
                    "n": int(pair["n"]),
                    "r": pair["r"],
                    "lo": pair["lo"],
                    "hi": pair["hi"],
                    "p": pair["p"],
                    "gpu_hours": float(costs.get(proxy, np.nan)),
                    "row": correlations.row(target, proxy),
                }
            )
    columns = ["target", "proxy", "kind", "k", "n", "r", "lo", "hi", "p", "gpu_hours", "row"]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame.drop(columns="row").assign(
            rank_r=[], rank_cost=[], diff=[], diff_lo=[], diff_hi=[], within_best=[]
        )
    frame["k"] = frame["k"].astype("Int64")
    frame = frame.sort_values(["target", "r"], ascending=[True, False], kind="stable")
    grouped = frame.groupby("target", sort=False)
    frame["rank_r"] = grouped["r"].rank(ascending=False, method="min").astype("Int64")
    frame["rank_cost"] = grouped["gpu_hours"].rank(ascending=True, method="min").astype("Int64")
    frame = pd.concat([_paired(group, correlations) for _, group in grouped])
    return frame.drop(columns="row").reset_index(drop=True)


def _kind(
    proxy: str, reference: str, subsets: Mapping[str, int], controls: Mapping[str, int]
) -> str:
    if proxy == reference:
        return "reference"
    return "subset" if proxy in subsets else "control" if proxy in controls else "other"


def _paired(group: pd.DataFrame, correlations: Correlations) -> pd.DataFrame:
    """The group's paired differences to its best candidate (its first row)."""
    group = group.copy()
    samples = correlations.samples
    best = int(group["row"].iloc[0])
    rows = group["row"].to_numpy(dtype=int)
    group["diff"] = group["r"].iloc[0] - group["r"]
    lo, hi = percentile_interval(samples[best][None, :] - samples[rows], correlations.confidence)
    group["diff_lo"], group["diff_hi"] = lo, hi
    finite = np.isfinite(group["r"].to_numpy(dtype=float))
    reaches = np.where(np.isnan(lo), rows == best, lo <= 0)
    group["within_best"] = (finite & reaches).astype(bool)
    return group


def recommend(ranked: pd.DataFrame, *, reference: str) -> pd.DataFrame:
    """Per target: the best proxy, and the cheapest one whose own correlation is clearly
    positive (interval above 0) and that is not distinguishable from the best at this
    sample size (`within_best`; ties in cost go to the higher r), compared with the
    reference. When even the best one's interval reaches 0, no dataset ranks architectures
    like the target: `recommended` is empty, `recommended_*` and `saving` are NaN, and the
    target has to be trained on itself."""
    rows = []
    for target, group in ranked.groupby("target", sort=False):
        valid = group[np.isfinite(group["r"])]
        if valid.empty:
            continue
        best = valid.iloc[0]
        clear = valid["lo"] > 0
        eligible = valid[valid["within_best"] & clear & np.isfinite(valid["gpu_hours"])]
        pick = (
            eligible.sort_values(["gpu_hours", "r"], ascending=[True, False], kind="stable").iloc[0]
            if len(eligible)
            else best
        )
        found = bool(best["lo"] > 0) if np.isfinite(best["lo"]) else bool(best["r"] > 0)
        ref = valid[valid["proxy"] == reference]
        ref_r = float(ref["r"].iloc[0]) if len(ref) else np.nan
        ref_cost = float(ref["gpu_hours"].iloc[0]) if len(ref) else np.nan
        chosen = {
            "recommended_r": pick["r"],
            "recommended_lo": pick["lo"],
            "recommended_hi": pick["hi"],
            "recommended_gpu_hours": pick["gpu_hours"],
            "saving": ref_cost / pick["gpu_hours"] if pick["gpu_hours"] > 0 else np.nan,
        }
        rows.append(
            {
                "target": target,
                "best": best["proxy"],
                "best_r": best["r"],
                "best_lo": best["lo"],
                "best_hi": best["hi"],
                "found": found,
                "recommended": pick["proxy"] if found else "",
                **{k: v if found else np.nan for k, v in chosen.items()},
                "reference_r": ref_r,
                "reference_gpu_hours": ref_cost,
            }
        )
    columns = ["target", "best", "best_r", "best_lo", "best_hi", "found", "recommended"]
    columns += [*RECOMMENDED, "reference_r", "reference_gpu_hours"]
    return pd.DataFrame(rows, columns=columns)
