"""The headline on shared resamples: every dataset against the reference, the reliability
of each dataset's mean over seeds and the noise-corrected correlation, all from the same
draws of architectures, with as many draws as keep the Monte-Carlo error of the interval
ends at most HEADLINE_MC_ERROR.

The tables share one set of draws: the first `bootstrap` rows of the headline's counts are
the draws of every other table, so a headline resample and a table resample of the same
index are the same architectures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.frame import StudyResults
from analysis.stats import (
    Correlations,
    bootstrap_counts,
    corrected_replicates,
    correlate,
    disattenuate,
    monte_carlo_error,
    seed_reliability,
)

HEADLINE_MC_ERROR = 0.005  # largest Monte-Carlo standard error of a headline interval end
MAX_HEADLINE_RESAMPLES = 64_000
KENDALL_BUDGET = 6e9  # Kendall table's cost: n^1.5 per resample and pair (kendall_replicates)
KENDALL_NULL_BUDGET = 1.3e8  # merge steps of Kendall's permutations (n log2 n each)
KENDALL_MIN_RESAMPLES = 200  # and permutations


@dataclass(frozen=True)
class Headline:
    """The headline's numbers and the draws they come from."""

    correlations: Correlations  # the reference against every dataset, on `counts`
    noise: pd.DataFrame  # one row per dataset: seed-to-seed r and reliability of the mean
    reliability: dict[str, float]
    replicates: dict[str, np.ndarray]  # reliability replicates, one per row of `counts`
    against: pd.DataFrame  # disattenuated rows of `correlations`
    counts: np.ndarray  # (resamples, architectures)
    mc_error: float  # largest Monte-Carlo error of a target's r interval end
    corrected_mc_error: float  # the same for the finite ends of corrected intervals


def largest_mc_error(samples: np.ndarray, confidence: float) -> float:
    """The largest finite Monte-Carlo standard error of the interval ends of `samples`
    (rows: statistics, columns: replicates); NaN when none is finite."""
    if samples.size == 0:
        return float("nan")
    errors = monte_carlo_error(samples, confidence)
    finite = errors[np.isfinite(errors)]
    return float(finite.max()) if finite.size else float("nan")


def resamples_needed(current: int, error: float, target: float = HEADLINE_MC_ERROR) -> int:
    """The resample count that brings a Monte-Carlo error of `error` at `current` resamples
    down to `target` (it falls as one over the square root of the count), with a fifth to
    spare, in whole thousands, at most MAX_HEADLINE_RESAMPLES."""
    if not np.isfinite(error) or error <= target or current == 0:
        return current
    wanted = math.ceil(current * (error / target) ** 2 * 1.2 / 1000) * 1000
    return int(min(MAX_HEADLINE_RESAMPLES, max(current, wanted)))


def kendall_resamples(n: int, pairs: int, bootstrap: int) -> int:
    """Kendall's resampling costs about n^1.5 per resample and pair (blocks of rows, see
    analysis.kendall): `bootstrap` resamples where that fits KENDALL_BUDGET (about 5 s
    here), else as many as fit, but at least KENDALL_MIN_RESAMPLES."""
    if pairs == 0 or n < 2:
        return bootstrap
    affordable = int(KENDALL_BUDGET // (n**1.5 * pairs))
    return int(min(bootstrap, max(KENDALL_MIN_RESAMPLES, affordable)))


def kendall_permutations(n: int, pairs: int, permutations: int) -> int:
    """Kendall's permutation null costs about n log2 n per permutation and pair (tie patterns
    differ between datasets, so nulls are rarely shared): `permutations` where that fits
    KENDALL_NULL_BUDGET, else as many as fit, but at least KENDALL_MIN_RESAMPLES."""
    if pairs == 0 or n < 2:
        return permutations
    affordable = int(KENDALL_NULL_BUDGET // (n * math.log2(n) * pairs))
    return int(min(permutations, max(KENDALL_MIN_RESAMPLES, affordable)))


def noise_floor(
    study: StudyResults,
    names: Sequence[str],
    *,
    metric: str,
    method: str,
    counts: np.ndarray,
    confidence: float,
) -> tuple[pd.DataFrame, dict[str, float], dict[str, np.ndarray]]:
    """Each dataset's seed-to-seed agreement and the reliability of its mean over seeds, on
    the draws `counts` (over all architectures of the study, in its order)."""
    done = study.query(status="done")
    per_arch = (
        done.groupby(["dataset", "arch_id"], observed=True)
        .size()
        .groupby("dataset", observed=True)
        .mean()
    )
    rows, reliability, replicates = [], {}, {}
    for name in names:
        summary, reps = seed_reliability(
            study.seed_errors(name, metric),
            method=method,
            confidence=confidence,
            seeds_averaged=float(per_arch.get(name, 1.0)),
            counts=counts,
        )
        rows.append({"dataset": name, **summary})
        reliability[name], replicates[name] = summary["reliability"], reps
    return pd.DataFrame(rows), reliability, replicates


def _rows(table: Correlations, pairs: Sequence[tuple[str, str]]) -> Correlations:
    """The rows of `table` for `pairs`, with their replicates."""
    index = [table.row(a, b) for a, b in pairs]
    return Correlations(
        table=table.table.iloc[index].reset_index(drop=True),
        samples=table.samples[index],
        names=table.names,
        confidence=table.confidence,
    )


def _target_rows(correlations: Correlations, targets: Sequence[str]) -> np.ndarray:
    t = correlations.table
    return np.flatnonzero(t["a"].isin(targets) | t["b"].isin(targets))


def _more_draws(
    errors: pd.DataFrame,
    pairs: list[tuple[str, str]],
    correlations: Correlations,
    counts: np.ndarray,
    wanted: int,
    rng: np.random.Generator,
) -> tuple[Correlations, np.ndarray]:
    """The headline pairs on `wanted` draws: `counts` and new ones after them; p-values
    stay those of `correlations` (the permutations do not change)."""
    extra = bootstrap_counts(rng, counts.shape[1], wanted - len(counts))
    counts = np.vstack([counts, extra])
    longer = correlate(
        errors,
        method=str(correlations.table["method"].iloc[0]),
        pairs=pairs,
        counts=counts,
        permutations=0,
        confidence=correlations.confidence,
    )
    longer.table["p"] = correlations.table["p"].to_numpy()
    return longer, counts


def headline(
    study: StudyResults,
    errors: pd.DataFrame,
    table: Correlations,
    *,
    reference: str,
    targets: Sequence[str],
    counts: np.ndarray,
    rng: np.random.Generator,
    metric: str,
    target_error: float = HEADLINE_MC_ERROR,
) -> Headline:
    """Every dataset of `errors` against the reference. Starts from the rows of `table`
    (computed on `counts`) and draws more from `rng` while the largest Monte-Carlo error of
    a target's interval end exceeds `target_error` (twice at most: the first estimate of
    the count needed is itself a little noisy)."""
    method = str(table.table["method"].iloc[0]) if len(table.table) else "spearman"
    pairs = [(reference, d) for d in errors.columns if d != reference]
    correlations = _rows(table, pairs)
    rows = _target_rows(correlations, targets)
    error = largest_mc_error(correlations.samples[rows], table.confidence)
    for _ in range(2):
        wanted = resamples_needed(len(counts), error, target_error)
        if wanted <= len(counts):
            break
        correlations, counts = _more_draws(errors, pairs, correlations, counts, wanted, rng)
        error = largest_mc_error(correlations.samples[rows], table.confidence)
    noise, reliability, replicates = noise_floor(
        study,
        list(errors.columns),
        metric=metric,
        method=method,
        counts=counts,
        confidence=table.confidence,
    )
    against = disattenuate(correlations, reliability, replicates)
    corrected = _corrected_error(correlations, replicates, rows)
    return Headline(correlations, noise, reliability, replicates, against, counts, error, corrected)


def _corrected_error(
    correlations: Correlations, replicates: dict[str, np.ndarray], rows: np.ndarray
) -> float:
    _, corrected = corrected_replicates(correlations, replicates)
    return largest_mc_error(corrected[rows], correlations.confidence)
