"""`Analysis`: everything the report shows, as tables; `analysis.report` computes it, and
the figures and the HTML page draw from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.stats import Correlations

if TYPE_CHECKING:
    from analysis.zerocost import ScoreAnalysis


@dataclass(frozen=True)
class Analysis:
    """Everything the report shows, as tables. `against` is the headline: each dataset
    against the reference, with the noise ceiling and the corrected correlation, computed
    on `headline_bootstrap` resamples (chosen so that the Monte-Carlo error of its interval
    ends, `headline_mc_error`, is at most 0.005 where the cap allows); the other tables use
    the first `bootstrap` of the same draws (Kendall's the first `kendall_bootstrap`).
    `subset_controls` pairs each subset with its size-matched control, per target."""

    path: str
    reference: str
    metric: str
    method: str
    bootstrap: int
    permutations: int
    confidence: float
    seed: int
    top_fraction: float
    targets: list[str]
    subsets: dict[str, int]
    errors: pd.DataFrame
    datasets: pd.DataFrame
    correlations: dict[str, Correlations]
    noise: pd.DataFrame
    against: pd.DataFrame
    subset_curve: pd.DataFrame
    proxies: pd.DataFrame
    recommendations: pd.DataFrame
    traits: pd.DataFrame
    top_agreement: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, int] = field(default_factory=dict)  # size controls: name -> images
    subset_controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    top_overlap: pd.DataFrame = field(default_factory=pd.DataFrame)  # pairs: n, k, chance, p
    headline_bootstrap: int = 0
    headline_target: float = 0.005  # the Monte-Carlo error the headline's count aims at
    kendall_bootstrap: int = 0
    kendall_permutations: int = 0
    headline_mc_error: float = float("nan")  # largest MC standard error of an r interval end
    corrected_mc_error: float = float("nan")  # the same for finite corrected interval ends
    mc_error: float = float("nan")  # the same for the tables on `bootstrap` resamples
    kendall_mc_error: float = float("nan")  # and for Kendall's on `kendall_bootstrap`
    top_k: dict[str, float] = field(default_factory=dict)  # n, k, chance, too_few
    scores: ScoreAnalysis | None = None  # training-free scores, when the results hold them

    @property
    def headline(self) -> pd.DataFrame:
        """The targets' rows of `against` (subsets and controls are in `subset_curve`)."""
        return self.against[self.against["dataset"].isin(self.targets)].reset_index(drop=True)
