"""Ranking before training: how well each training-free score (results.h5's score tables,
computed at initialisation) predicts trained error on each dataset, whether it does better
than counting parameters or FLOPs, how repeatable it is between seeds, and whether the
data-dependent scores agree across datasets as the trained errors do.

Correlations are Spearman's, signed so that a positive r means that a higher score goes
with a lower error: r = spearman(score, -error). Intervals are percentile bootstrap
intervals over architectures on resamples given as counts (`stats.correlate(counts=)`),
by default the draws the report's other tables make with the same seed; every correlation
of one dataset uses the same draws, so the difference of two of them is a paired sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # no stubs in the environment

from analysis.frame import Study
from analysis.stats import (
    Correlations,
    bootstrap_counts,
    correlate,
    paired_difference,
    permutation_indices,
    seed_reliability,
)

DATA_FREE = ("synflow", "params", "flops")  # scores that never look at the images
BASELINES = ("params", "flops")  # what every score has to beat
BASELINE_LABELS = {"params": "params", "flops": "FLOPs"}
ORDER = ("naswot", "synflow", "grad_norm", "snip", "jacob_cov")
TARGET = "lower error"  # the column a score is correlated with: minus the error
BETTER, TIED, WORSE = "better than", "not distinguishable from", "worse than"
UNCOMPARABLE = "not comparable"
EXACT_UP_TO = 8  # datasets up to which the Mantel test uses every one of the D! orders


@dataclass(frozen=True)
class ScoreAnalysis:
    """The tables of the "Ranking before training" section.

    correlations: one row per (dataset, score): n, signed r, interval, p, and the paired
    difference from each baseline (`vs_<baseline>_diff`, `_lo`, `_hi`) with its reading
    (`vs_<baseline>`). seeds: seed-to-seed agreement per (dataset, score), empty when every
    table holds one seed. mantel: per data-dependent score, the permutation test of its
    cross-dataset agreement against the trained one; agreement: the two matrices' entries.
    summary: per score, across datasets."""

    correlations: pd.DataFrame
    seeds: pd.DataFrame
    mantel: pd.DataFrame
    agreement: pd.DataFrame
    summary: pd.DataFrame
    metric: str
    bootstrap: int
    permutations: int
    confidence: float
    score_seeds: dict[str, list[int]]  # dataset -> the seeds its score table holds
    minibatch_sizes: dict[str, int]  # dataset -> images in the minibatch it was scored on


def reading(lo: float, hi: float, baseline: str) -> str:
    """better than / worse than / not distinguishable from `baseline`, by whether the
    interval of the difference r(score) - r(baseline) lies above 0, below 0, or contains 0."""
    label = BASELINE_LABELS.get(baseline, baseline)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{UNCOMPARABLE} with {label}"
    if lo > 0:
        return f"{BETTER} {label}"
    if hi < 0:
        return f"{WORSE} {label}"
    return f"{TIED} {label}"


def order_scores(names: Sequence[str]) -> list[str]:
    """The known scores in their usual order, then any others, then the baselines."""
    known = [n for n in ORDER if n in names]
    rest = [n for n in names if n not in ORDER and n not in BASELINES]
    return known + rest + [b for b in BASELINES if b in names]


def rank_safe(values: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Infinite scores kept at the ends of the ranking (-inf lowest, +inf highest, ties among
    them), as finite values with the same ranks; NaN stays missing. Spearman's r only sees
    ranks, so it is unchanged (scipy's spearmanr ranks infinities the same way)."""
    frame = values.to_frame() if isinstance(values, pd.Series) else values
    out = frame.astype(float).copy()
    for name in out.columns:
        column = out[name].to_numpy()
        finite = column[np.isfinite(column)]
        low, high = (finite.min() - 1, finite.max() + 1) if len(finite) else (0.0, 0.0)
        out[name] = np.where(column == -np.inf, low, np.where(column == np.inf, high, column))
    return out


def score_frame(study: Study, dataset: str, seed: int | None = None) -> pd.DataFrame:
    """architecture x score of one dataset at one seed (default the table's lowest), in the
    order of study.architectures (NaN where not scored). params and FLOPs absent from the
    table come from the cells' counts as trained."""
    table = study.score_tables[dataset]
    seed = table.seed_list[0] if seed is None else seed
    rows = table.seeds == seed
    frame = pd.DataFrame(table.values[rows], index=table.arch_ids[rows], columns=table.names)
    frame = frame.reindex(study.architectures.index)
    for name in BASELINES:
        if name not in frame.columns and len(study.cells):
            frame[name] = study.as_trained(name)[dataset].astype(float)
    return frame[order_scores(list(frame.columns))]


def default_counts(rows: int, bootstrap: int, seed: int) -> np.ndarray:
    """The bootstrap draws `stats.correlate` makes for a table of `rows` architectures with
    this seed, so that the section's intervals use the resamples of the report's tables."""
    return bootstrap_counts(np.random.default_rng(seed), rows, bootstrap)


def dataset_correlations(
    error: pd.Series,
    scores: pd.DataFrame,
    counts: np.ndarray,
    *,
    permutations: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """One dataset: each score's signed r with error, and its paired difference from each
    baseline on the architectures that have the score, the baseline and an error."""
    frame = rank_safe(scores).assign(**{TARGET: -error.to_numpy(dtype=float)})
    pairs = [(name, TARGET) for name in scores.columns]
    result = correlate(
        frame,
        method="spearman",
        pairs=pairs,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        counts=counts,
    )
    table = result.table.rename(columns={"a": "score"}).drop(columns=["b", "method"])
    for baseline in BASELINES:
        diffs = [_versus(frame, result, name, baseline, counts) for name in scores.columns]
        table[f"vs_{baseline}_diff"], table[f"vs_{baseline}_lo"], table[f"vs_{baseline}_hi"] = (
            np.array(diffs, dtype=float).reshape(-1, 3).T
        )
        table[f"vs_{baseline}"] = [
            reading(lo, hi, baseline) if name != baseline else ""
            for name, (_, lo, hi) in zip(scores.columns, diffs, strict=True)
        ]
    return table


def _versus(
    frame: pd.DataFrame, result: Correlations, name: str, baseline: str, counts: np.ndarray
) -> tuple[float, float, float]:
    """r(name) - r(baseline) with its paired interval, on the architectures that have both
    and an error, so that every resample holds the same architectures for both."""
    if name == baseline or baseline not in frame.columns:
        return (np.nan, np.nan, np.nan)
    has = frame.notna().to_numpy()
    score, base, error = (frame.columns.get_loc(c) for c in (name, baseline, TARGET))
    if not np.array_equal(has[:, score] & has[:, error], has[:, base] & has[:, error]):
        part = frame[[name, baseline, TARGET]]
        result = correlate(
            part.where(part.notna().all(axis=1)),
            method="spearman",
            pairs=[(name, TARGET), (baseline, TARGET)],
            permutations=0,
            confidence=result.confidence,
            counts=counts,
        )
    return paired_difference(result, (name, TARGET), (baseline, TARGET))


def seed_agreement(
    study: Study, dataset: str, counts: np.ndarray, confidence: float
) -> list[dict[str, object]]:
    """Per score of one dataset (not params or FLOPs, which no seed changes), the mean
    Spearman correlation between its seeds over architectures, with interval."""
    table = study.score_tables[dataset]
    if len(table.seed_list) < 2:
        return []
    rows: list[dict[str, object]] = []
    for name in order_scores(table.names):
        if name in BASELINES:
            continue
        long = pd.DataFrame(
            {"arch_id": table.arch_ids, "seed": table.seeds, "v": table.column(name)}
        )
        by_seed = long.pivot(index="arch_id", columns="seed", values="v")
        by_seed = rank_safe(by_seed.reindex(study.architectures.index))
        summary, _ = seed_reliability(
            by_seed, method="spearman", seeds_averaged=1, confidence=confidence, counts=counts
        )
        rows.append(
            {
                "dataset": dataset,
                "score": name,
                **{k: summary[k] for k in ("seeds", "n", "seed_r", "seed_lo", "seed_hi")},
            }
        )
    return rows


# ---- do the scores agree across datasets as the trained errors do? ----------------------
def mantel(
    first: np.ndarray, second: np.ndarray, *, permutations: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Mantel test of two symmetric D x D matrices: the Pearson correlation of their D(D-1)/2
    entries above the diagonal, and the one-sided p-value of a positive association from
    permuting the labels of `first` (its rows and columns together). Every one of the D!
    permutations is used when there are no more than `permutations` (exact; the smallest p
    is 1/D!), else `permutations` random ones (the smallest p is 1/(permutations + 1))."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    size = len(first)
    upper = np.triu_indices(size, 1)
    out = {"datasets": size, "pairs": len(upper[0]), "statistic": np.nan, "p": np.nan}
    out.update(permutations=0, exact=False, smallest_p=np.nan)
    x, y = first[upper], second[upper]
    if size < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return out
    observed = _pearson(x[None, :], y)[0]
    perms, exact = permutation_indices(np.random.default_rng(seed), size, permutations)
    null = _pearson(first[perms[:, upper[0]], perms[:, upper[1]]], y)
    gamma = abs(np.finfo(float).eps * 100 * observed) if np.isfinite(observed) else 0.0
    hits = np.count_nonzero(null >= observed - gamma)
    adjust = 0 if exact else 1
    out.update(statistic=observed, permutations=len(perms), exact=exact)
    out.update(p=(hits + adjust) / (len(perms) + adjust) if np.isfinite(observed) else np.nan)
    out["smallest_p"] = 1 / math.factorial(size) if exact else 1 / (len(perms) + 1)
    return out


def _pearson(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of `rows` with `y`."""
    a = rows - rows.mean(axis=1, keepdims=True)
    b = y - y.mean()
    with np.errstate(all="ignore"):
        return (a @ b) / np.sqrt((a**2).sum(axis=1) * (b**2).sum())


def cross_dataset(
    study: Study, errors: pd.DataFrame, *, permutations: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For every data-dependent score, its Spearman matrix across datasets (architectures as
    observations) against the trained errors' matrix: the Mantel test (exact up to
    EXACT_UP_TO datasets, else on `permutations` random orders), and both matrices' entries
    as a long table."""
    tests, entries = [], []
    names = order_scores(sorted({n for t in study.score_tables.values() for n in t.names}))
    for name in (n for n in names if n not in DATA_FREE):
        frames = {
            d: score_frame(study, d)[name]
            for d, t in study.score_tables.items()
            if name in t.names and d in errors.columns
        }
        # The report's dataset order; a dataset with fewer than 3 trained architectures has
        # no trained correlations to compare with.
        trained = errors.notna().sum() >= 3
        datasets = [d for d in errors.columns if d in frames and trained[d]]
        values = rank_safe(pd.DataFrame({d: frames[d] for d in datasets}))
        scored = correlate(values, method="spearman", bootstrap=0, permutations=0)
        errors_r = correlate(errors[datasets], method="spearman", bootstrap=0, permutations=0)
        a, b = scored.matrix("r").to_numpy(), errors_r.matrix("r").to_numpy()
        count = math.factorial(len(datasets)) if len(datasets) <= EXACT_UP_TO else permutations
        tests.append({"score": name, **mantel(a, b, permutations=count, seed=seed)})
        upper = np.triu_indices(len(datasets), 1)
        for i, j in zip(*upper, strict=True):
            pair = {"score": name, "a": datasets[i], "b": datasets[j]}
            entries.append({**pair, "score_r": a[i, j], "trained_r": b[i, j]})
    return pd.DataFrame(tests), pd.DataFrame(entries)


# ---- the section's tables ---------------------------------------------------------------
def summarise(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per score across datasets: how many datasets, the median, smallest and largest r,
    and how many datasets read better than, not distinguishable from and worse than each
    baseline."""
    rows = []
    for name, group in correlations.groupby("score", sort=False):
        r = group["r"].dropna()
        row: dict[str, object] = {"score": name, "data_dependent": name not in DATA_FREE}
        row.update(datasets=len(r), median_r=r.median(), min_r=r.min(), max_r=r.max())
        for baseline in BASELINES:
            readings = group[f"vs_{baseline}"].astype(str)
            for key, word in (("better", BETTER), ("tied", TIED), ("worse", WORSE)):
                count = int(readings.str.startswith(word + " ").sum())
                row[f"{key}_vs_{baseline}"] = count if name != baseline else None
        rows.append(row)
    return pd.DataFrame(rows)


def analyze_scores(
    study: Study,
    errors: pd.DataFrame,
    *,
    metric: str = "top1_err",
    bootstrap: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    counts: np.ndarray | None = None,
    progress: bool = False,
) -> ScoreAnalysis | None:
    """The section's tables for the datasets of `errors` (architecture x dataset, the mean
    over seeds of `metric`, rows in the order of study.architectures) that hold scores;
    None when none does. `counts` (resamples x architectures) are the bootstrap draws, by
    default those `correlate` makes for `errors` with `seed`."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    if not errors.index.equals(study.architectures.index):
        raise ValueError("errors must have one row per architecture, in the study's order")
    datasets = [d for d in errors.columns if d in study.score_tables]
    if not datasets:
        return None
    counts = default_counts(len(errors), bootstrap, seed) if counts is None else counts
    if counts.ndim != 2 or counts.shape[1] != len(errors):
        raise ValueError(f"counts must be (resamples, {len(errors)}), got {counts.shape}")
    parts, seed_rows = [], []
    for name in tqdm(datasets, desc="training-free scores", disable=not progress, leave=False):
        scores = score_frame(study, name)
        part = dataset_correlations(
            errors[name],
            scores,
            counts,
            permutations=permutations,
            confidence=confidence,
            seed=seed,
        )
        part.insert(0, "dataset", name)
        part.insert(2, "data_dependent", ~part["score"].isin(DATA_FREE))
        part.insert(3, "seed", study.score_tables[name].seed_list[0])
        parts.append(part)
        seed_rows += seed_agreement(study, name, counts, confidence)
    table = pd.concat(parts, ignore_index=True)
    tests, entries = cross_dataset(study, errors, permutations=permutations, seed=seed)
    return ScoreAnalysis(
        correlations=table,
        seeds=pd.DataFrame(seed_rows),
        mantel=tests,
        agreement=entries,
        summary=summarise(table),
        metric=metric,
        bootstrap=len(counts),
        permutations=permutations,
        confidence=confidence,
        score_seeds={d: study.score_tables[d].seed_list for d in datasets},
        minibatch_sizes={d: study.score_tables[d].minibatch_size for d in datasets},
    )
