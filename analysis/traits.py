"""Which architecture traits predict error on each dataset, and how far the best
architectures of two datasets overlap."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from analysis.stats import correlate

# Column of the architecture table -> how the report names it.
TRAITS = {
    "total_depth": "total depth",
    "cumulative_width": "cumulative width",
    "mean_bottleneck_ratio": "mean bottleneck ratio",
    "mean_group_width": "mean group width",
    "flops_224": "flops (224 px)",
    "params_224": "params",
}


def trait_effects(
    architectures: pd.DataFrame,
    errors: pd.DataFrame,
    *,
    method: str = "spearman",
    bootstrap: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Correlation of each dataset's error with each trait (negative: more of the trait,
    lower error), with bootstrap interval and permutation p-value."""
    missing = [t for t in TRAITS if t not in architectures.columns]
    if missing:
        raise ValueError(
            f"architecture table lacks traits {missing}; has {list(architectures.columns)}"
        )
    traits = architectures.loc[errors.index, list(TRAITS)].astype(float)
    traits.columns = [f"trait:{t}" for t in TRAITS]
    joined = pd.concat([traits, errors], axis=1)
    pairs = [(f"trait:{t}", d) for d in errors.columns for t in TRAITS]
    result = correlate(
        joined,
        method=method,
        pairs=pairs,
        bootstrap=bootstrap,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        progress=progress,
    )
    table = result.table.rename(columns={"a": "trait", "b": "dataset"})
    table["trait"] = table["trait"].str.removeprefix("trait:")
    table.insert(2, "label", table["trait"].map(TRAITS))
    return table[["dataset", "trait", "label", "method", "n", "r", "lo", "hi", "p"]]


def top_agreement(errors: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Share of the best `fraction` of architectures (lowest error) two datasets have in
    common, over the architectures both have; chance level is `fraction`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    names = list(errors.columns)
    values = errors.to_numpy(dtype=float)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for i, j in combinations(range(len(names)), 2):
        both = np.isfinite(values[:, i]) & np.isfinite(values[:, j])
        n = int(both.sum())
        if n == 0:
            continue
        k = max(1, int(round(fraction * n)))
        best_i = set(np.argsort(values[both, i], kind="stable")[:k].tolist())
        best_j = set(np.argsort(values[both, j], kind="stable")[:k].tolist())
        out.iloc[i, j] = out.iloc[j, i] = len(best_i & best_j) / k
    for i in range(len(names)):
        if np.isfinite(values[:, i]).any():
            out.iloc[i, i] = 1.0
    return out
