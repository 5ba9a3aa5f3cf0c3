"""Which architecture traits predict error on each dataset (complexity counted for the
model as trained on it, the false discovery rate controlled across the table), and how far
the best architectures of two datasets overlap (with the exact chance level)."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.stats import correlate

# Column of the architecture table -> how the report names it. flops and params are
# counted per dataset, as trained (its resolution and classes), where results.h5 has them.
TRAITS = {
    "total_depth": "total depth",
    "cumulative_width": "cumulative width",
    "mean_bottleneck_ratio": "mean bottleneck ratio",
    "mean_group_width": "mean group width",
    "flops": "flops",
    "params": "params",
}
AS_TRAINED = {"flops": "flops_224", "params": "params_224"}  # and the fallback at 224 px
FDR_METHOD = "Benjamini-Hochberg"
TOO_FEW_TOP = 5  # with fewer best architectures than this, a share moves in steps >= 0.2


def _complexity(
    architectures: pd.DataFrame, dataset: str, trait: str, as_trained: Mapping[str, pd.DataFrame]
) -> tuple[pd.Series, str]:
    """One dataset's flops or params per architecture, and how they were counted: "as
    trained", or "224 px" where results.h5 has no as-trained count."""
    trained = as_trained.get(trait)
    if trained is not None and dataset in trained and trained[dataset].notna().any():
        return trained[dataset], "as trained"
    return architectures[AS_TRAINED[trait]], "224 px"


def _trait_table(
    architectures: pd.DataFrame, errors: pd.DataFrame, as_trained: Mapping[str, pd.DataFrame]
) -> tuple[pd.DataFrame, list[tuple[str, str]], dict[str, tuple[str, str]]]:
    """Every trait column and every dataset's error side by side, the (trait column,
    dataset) pairs to correlate, and each trait column's (trait, how it was counted)."""
    columns: dict[str, pd.Series] = {}
    pairs, meaning = [], {}
    for trait in TRAITS:
        if trait not in AS_TRAINED:
            columns[f"trait:{trait}"] = architectures[trait]
            meaning[f"trait:{trait}"] = (trait, "")
    for dataset in errors.columns:
        for trait in TRAITS:
            name = f"trait:{trait}"
            if trait in AS_TRAINED:
                name = f"trait:{trait}@{dataset}"
                columns[name], counted = _complexity(architectures, dataset, trait, as_trained)
                meaning[name] = (trait, counted)
            pairs.append((name, dataset))
    traits = pd.DataFrame(columns, index=architectures.index).astype(float)
    return pd.concat([traits, errors], axis=1), pairs, meaning


def trait_effects(
    architectures: pd.DataFrame,
    errors: pd.DataFrame,
    *,
    as_trained: Mapping[str, pd.DataFrame] | None = None,
    method: str = "spearman",
    bootstrap: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> pd.DataFrame:
    """Correlation of each dataset's error with each trait (negative: more of the trait,
    lower error), with bootstrap interval, permutation p-value and the Benjamini-Hochberg
    q-value over the whole table. `as_trained` maps "flops" and "params" to architecture x
    dataset counts of the models as trained (StudyResults.as_trained)."""
    base = [t for t in TRAITS if t not in AS_TRAINED] + list(AS_TRAINED.values())
    missing = [t for t in base if t not in architectures.columns]
    if missing:
        raise ValueError(
            f"architecture table lacks traits {missing}; has {list(architectures.columns)}"
        )
    joined, pairs, meaning = _trait_table(architectures.loc[errors.index], errors, as_trained or {})
    table = correlate(
        joined,
        method=method,
        pairs=pairs,
        bootstrap=bootstrap,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        counts=counts,
    ).table.rename(columns={"a": "column", "b": "dataset"})
    table.insert(0, "trait", table["column"].map(lambda c: meaning[c][0]))
    table["counted"] = table["column"].map(lambda c: meaning[c][1])
    table["label"] = table["trait"].map(TRAITS)
    table["q"] = fdr(table["p"].to_numpy(dtype=float))
    return table[["dataset", "trait", "label", "counted", "method", "n", "r", "lo", "hi", "p", "q"]]


def fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q) of the finite p-values (scipy's
    false_discovery_control); NaN stays NaN. Valid under independence or positive
    dependence of the tests."""
    out = np.full(len(p), np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = sps.false_discovery_control(p[finite], method="bh")
    return out


def top_overlap(errors: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Per pair of datasets, over the n architectures both have: the best k = round(fraction
    n) of each (at least 1), how many they share, the share, its exact chance level k / n
    (the mean of a hypergeometric overlap when the rankings are independent) and the
    one-sided p-value of sharing at least that many by chance."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    names = list(errors.columns)
    values = errors.to_numpy(dtype=float)
    rows = []
    for i, j in combinations(range(len(names)), 2):
        both = np.isfinite(values[:, i]) & np.isfinite(values[:, j])
        n = int(both.sum())
        if n == 0:
            continue
        k = max(1, int(round(fraction * n)))
        best_i = set(np.argsort(values[both, i], kind="stable")[:k].tolist())
        best_j = set(np.argsort(values[both, j], kind="stable")[:k].tolist())
        shared = len(best_i & best_j)
        p = float(sps.hypergeom.sf(shared - 1, n, k, k))
        rows.append((names[i], names[j], n, k, shared, shared / k, k / n, p))
    columns = ["a", "b", "n", "k", "shared", "share", "chance", "p"]
    return pd.DataFrame(rows, columns=columns)


def top_agreement(errors: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Share of the best `fraction` of architectures (lowest error) two datasets have in
    common, over the architectures both have, as a symmetric matrix (top_overlap has the
    chance level and p-value of each pair)."""
    names = list(errors.columns)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for row in top_overlap(errors, fraction).itertuples():
        out.loc[row.a, row.b] = out.loc[row.b, row.a] = row.share
    for name in names:
        if errors[name].notna().any():
            out.loc[name, name] = 1.0
    return out


def top_chance(overlap: pd.DataFrame) -> dict[str, float]:
    """The most common n and k of the pairs, their chance level k / n, and whether k is
    too small for the share to mean much (k < TOO_FEW_TOP: it moves in steps of 1/k)."""
    if overlap.empty:
        return {}
    n, k = overlap[["n", "k"]].value_counts().idxmax()
    return {"n": float(n), "k": float(k), "chance": k / n, "too_few": float(k < TOO_FEW_TOP)}
