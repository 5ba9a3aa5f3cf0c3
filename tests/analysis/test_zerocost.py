"""Ranking before training: each score's signed correlation with trained error, its paired
comparison with params and FLOPs, its seed-to-seed agreement and the Mantel test, checked
against scipy and against cases whose answer is known by hand."""

from __future__ import annotations

import itertools
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from scipy import stats as sps

from analysis.frame import Study, open_results
from analysis.report import Analysis, analyze, write_report
from analysis.schema import ScoreTable, add_scores
from analysis.stats import bootstrap_counts, correlate
from analysis.synthetic import default_datasets, synthetic_results
from analysis.synthetic_scores import synthetic_scores
from analysis.zerocost import (
    TARGET,
    analyze_scores,
    dataset_correlations,
    default_counts,
    mantel,
    rank_safe,
    reading,
)

KEEP = ("imagenet", "cifar10", "concrete", "ham10000")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Study]:
    """80 architectures, 4 datasets, 2 seeds of training and of scores."""
    folder = tmp_path_factory.mktemp("scored")
    specs = [s for s in default_datasets() if s.name in KEEP]
    truth = synthetic_results(
        folder / "results.h5", architectures=80, seeds=2, datasets=specs, missing=0.03, seed=5
    )
    synthetic_scores(folder, truth, seeds=2, seed=1)
    return folder, open_results(folder)


def _one(error: np.ndarray, scores: dict[str, np.ndarray], bootstrap: int = 400) -> pd.DataFrame:
    counts = bootstrap_counts(np.random.default_rng(0), len(error), bootstrap)
    frame = pd.DataFrame(scores)
    return dataset_correlations(
        pd.Series(error), frame, counts, permutations=0, confidence=0.95, seed=0
    ).set_index("score")


# ---- the correlation of a score with error ---------------------------------------------
def test_a_score_falling_exactly_with_error_has_r_one_and_rising_has_minus_one() -> None:
    error = np.random.default_rng(1).uniform(5, 40, 50)
    table = _one(error, {"down": np.exp(-error / 7), "up": error**2, "params": error})
    assert table.loc["down", ["r", "lo", "hi"]].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert table.loc["up", ["r", "lo", "hi"]].tolist() == pytest.approx([-1.0, -1.0, -1.0])


def test_an_independent_score_has_an_interval_around_zero_at_large_n() -> None:
    rng = np.random.default_rng(2)
    error, score = rng.normal(size=3000), rng.normal(size=3000)
    row = _one(error, {"naswot": score}, bootstrap=300).loc["naswot"]
    assert row["lo"] < 0 < row["hi"] and row["hi"] - row["lo"] < 0.09
    assert row["r"] == pytest.approx(-sps.spearmanr(score, error).statistic, abs=1e-12)


def test_infinite_scores_rank_at_the_ends_as_scipy_ranks_them() -> None:
    score = np.array([1.0, -np.inf, 3.0, -np.inf, 5.0, 2.0, np.inf])
    error = np.array([6.0, 7.0, 4.0, 9.0, 2.0, 5.0, 1.0])
    assert rank_safe(pd.Series(score, name="s"))["s"].tolist() == [1, 0, 3, 0, 5, 2, 6]
    r = _one(error, {"naswot": score}).loc["naswot", "r"]
    assert r == pytest.approx(-sps.spearmanr(score, error).statistic, abs=1e-12)


# ---- the paired comparison with the baselines -------------------------------------------
def test_the_difference_from_params_is_paired_on_the_same_resamples() -> None:
    rng = np.random.default_rng(3)
    error = rng.normal(size=200)
    params = -error + 1.5 * rng.normal(size=200)  # a weak baseline
    table = _one(error, {"naswot": -error, "snip": rng.normal(size=200), "params": params})
    counts = bootstrap_counts(np.random.default_rng(0), 200, 400)
    frame = pd.DataFrame({"naswot": -error, "params": params, TARGET: -error})
    both = correlate(frame, pairs=[("naswot", TARGET), ("params", TARGET)], counts=counts)
    diff = both.samples[0] - both.samples[1]
    row = table.loc["naswot"]
    assert row["vs_params_diff"] == pytest.approx(1 - table.loc["params", "r"])
    assert [row["vs_params_lo"], row["vs_params_hi"]] == pytest.approx(
        np.percentile(diff, [2.5, 97.5]).tolist()
    )
    assert row["vs_params"] == "better than params"
    assert table.loc["snip", "vs_params"] == "worse than params"
    assert table.loc["params", "vs_params"] == ""


def test_a_score_equal_to_params_plus_a_little_noise_is_not_distinguishable() -> None:
    rng = np.random.default_rng(4)
    error = rng.normal(size=150)
    params = -error + rng.normal(size=150)
    table = _one(error, {"grad_norm": params + 0.2 * rng.normal(size=150), "params": params})
    row = table.loc["grad_norm"]
    assert row["vs_params_lo"] < 0 < row["vs_params_hi"]
    assert row["vs_params"] == "not distinguishable from params"


def test_a_comparison_uses_only_architectures_that_have_both_scores() -> None:
    rng = np.random.default_rng(5)
    error = rng.normal(size=60)
    score = -error + rng.normal(size=60)
    score[:10] = np.nan
    params = -error + 2 * rng.normal(size=60)
    row = _one(error, {"snip": score, "params": params}).loc["snip"]
    r_params = -sps.spearmanr(params[10:], error[10:]).statistic
    r_snip = -sps.spearmanr(score[10:], error[10:]).statistic
    assert row["n"] == 50 and row["vs_params_diff"] == pytest.approx(r_snip - r_params)


def test_a_reading_follows_from_what_the_interval_of_the_difference_excludes() -> None:
    assert reading(0.01, 0.3, "params") == "better than params"
    assert reading(-0.3, -0.01, "flops") == "worse than FLOPs"
    assert reading(-0.1, 0.2, "flops") == "not distinguishable from FLOPs"
    assert reading(np.nan, np.nan, "params") == "not comparable with params"


# ---- the Mantel test ------------------------------------------------------------------
def _square(entries: list[float]) -> np.ndarray:
    size = int(round((1 + math.sqrt(1 + 8 * len(entries))) / 2))
    out = np.eye(size)
    out[np.triu_indices(size, 1)] = entries
    return out + np.triu(out, 1).T


def test_mantel_on_three_datasets_by_hand() -> None:
    # Relabelling 3 datasets permutes their 3 pairs in all 6 ways; only the identity keeps
    # the entries in the order that correlates perfectly: p = 1/3! exactly.
    out = mantel(_square([0.1, 0.5, 0.9]), _square([0.2, 0.4, 0.6]), permutations=100)
    assert out["statistic"] == pytest.approx(1.0)
    assert (out["p"], out["smallest_p"], out["permutations"]) == (1 / 6, 1 / 6, 6)
    assert (out["datasets"], out["pairs"], out["exact"]) == (3, 3, True)


def test_mantel_p_equals_a_brute_force_count_over_relabellings() -> None:
    rng = np.random.default_rng(6)
    first, second = _square(list(rng.uniform(-1, 1, 10))), _square(list(rng.uniform(-1, 1, 10)))
    upper = np.triu_indices(5, 1)
    observed = sps.pearsonr(first[upper], second[upper]).statistic
    null = [
        sps.pearsonr(first[np.ix_(p, p)][upper], second[upper]).statistic
        for p in itertools.permutations(range(5))
    ]
    out = mantel(first, second, permutations=200)
    assert out["statistic"] == pytest.approx(observed)
    assert out["p"] == pytest.approx(np.mean(np.array(null) >= observed - 1e-12))
    assert (out["permutations"], out["exact"]) == (120, True)


def test_mantel_with_random_relabellings_counts_the_observed_one() -> None:
    rng = np.random.default_rng(7)
    entries = list(rng.uniform(-1, 1, 45))
    out = mantel(_square(entries), _square(entries), permutations=99, seed=3)
    assert (out["p"], out["smallest_p"], out["exact"]) == (0.01, 0.01, False)


def test_mantel_needs_three_datasets() -> None:
    out = mantel(_square([0.3]), _square([0.5]))
    assert np.isnan(out["statistic"]) and out["pairs"] == 1


# ---- the whole analysis on a study ------------------------------------------------------
def test_the_section_values_equal_scipy_on_the_study(scored: tuple[Path, Study]) -> None:
    _, study = scored
    errors = study.errors()
    result = analyze_scores(study, errors, bootstrap=100, permutations=50)
    assert result is not None
    table = result.correlations.set_index(["dataset", "score"])
    assert len(table) == 4 * 7
    for dataset, score in [("cifar10", "naswot"), ("concrete", "params"), ("imagenet", "flops")]:
        scores = study.score_tables[dataset]
        rows = scores.seeds == 0
        values = pd.Series(scores.column(score)[rows], index=scores.arch_ids[rows])
        both = pd.concat([values, errors[dataset]], axis=1).dropna()
        expected = -sps.spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic
        assert table.loc[(dataset, score), "r"] == pytest.approx(expected, abs=1e-12)
        assert table.loc[(dataset, score), "n"] == len(both)


def test_scores_of_the_lowest_seed_are_correlated_and_seeds_agree_as_scipy_says(
    scored: tuple[Path, Study],
) -> None:
    _, study = scored
    result = analyze_scores(study, study.errors(), bootstrap=100, permutations=0)
    assert result is not None
    seeds = result.seeds.set_index(["dataset", "score"])
    assert len(seeds) == 4 * 5 and "params" not in seeds.index.get_level_values("score")
    table = study.score_tables["ham10000"]
    a, b = (table.column("snip")[table.seeds == s] for s in (0, 1))
    assert seeds.loc[("ham10000", "snip"), "seed_r"] == pytest.approx(sps.spearmanr(a, b)[0])
    assert set(result.correlations["seed"]) == {0}


def test_mantel_runs_on_the_data_dependent_scores_exactly_with_four_datasets(
    scored: tuple[Path, Study],
) -> None:
    _, study = scored
    result = analyze_scores(study, study.errors(), bootstrap=50, permutations=10)
    assert result is not None
    assert result.mantel["score"].tolist() == ["naswot", "grad_norm", "snip", "jacob_cov"]
    assert set(result.mantel["permutations"]) == {24} and result.mantel["exact"].all()
    assert set(result.mantel["smallest_p"]) == {1 / 24}
    assert len(result.agreement) == 4 * 6
    row = result.agreement.iloc[0]
    trained = study.errors()[[row["a"], row["b"]]].dropna()
    expected = sps.spearmanr(trained.iloc[:, 0], trained.iloc[:, 1]).statistic
    assert row["trained_r"] == pytest.approx(expected)


def test_default_draws_are_those_of_the_report_tables(scored: tuple[Path, Study]) -> None:
    _, study = scored
    errors = study.errors()[["imagenet", "cifar10"]]
    ours = correlate(errors, counts=default_counts(len(errors), 60, 9), permutations=0)
    theirs = correlate(errors, bootstrap=60, seed=9, permutations=0)
    np.testing.assert_array_equal(ours.samples, theirs.samples)


def test_a_study_without_scores_has_no_section_tables(study: Study) -> None:
    assert analyze_scores(study, study.errors()) is None


def test_errors_in_another_order_are_refused(scored: tuple[Path, Study]) -> None:
    _, study = scored
    with pytest.raises(ValueError, match="one row per architecture, in the study's order"):
        analyze_scores(study, study.errors().iloc[::-1])


# ---- the synthetic scores ----------------------------------------------------------------
def test_planted_scores_relate_to_error_as_planted(tmp_path: Path) -> None:
    specs = [s for s in default_datasets() if s.name in ("imagenet", "cifar10")]
    truth = synthetic_results(tmp_path / "results.h5", architectures=400, seeds=1, datasets=specs)
    before = open_results(tmp_path).cells.drop(columns=[]).copy()
    synthetic_scores(tmp_path, truth, relations={"naswot": 0.9, "snip": 0.0}, seed_noise=0.0)
    study = open_results(tmp_path)
    pd.testing.assert_frame_equal(study.cells, before)  # the cells are left as they were
    result = analyze_scores(study, study.errors(), bootstrap=200, permutations=0)
    assert result is not None
    table = result.correlations.set_index(["dataset", "score"])
    assert table.loc[("cifar10", "naswot"), "lo"] > 0.7
    assert table.loc[("cifar10", "snip"), "lo"] < 0 < table.loc[("cifar10", "snip"), "hi"]


def test_scores_of_one_seed_give_no_seed_table(tmp_path: Path) -> None:
    specs = [s for s in default_datasets() if s.name in ("imagenet", "cifar10")]
    truth = synthetic_results(tmp_path / "results.h5", architectures=30, seeds=1, datasets=specs)
    synthetic_scores(tmp_path, truth, datasets=["cifar10"])
    study = open_results(tmp_path)
    result = analyze_scores(study, study.errors(), bootstrap=20, permutations=0)
    assert result is not None and result.seeds.empty
    assert set(result.correlations["dataset"]) == {"cifar10"} and result.mantel.empty is False
    assert np.isnan(result.mantel["statistic"]).all()  # one dataset: no pairs to test


def test_params_and_flops_missing_from_a_table_come_from_the_cells(tmp_path: Path) -> None:
    specs = [s for s in default_datasets() if s.name in ("imagenet", "cifar10")]
    synthetic_results(tmp_path / "results.h5", architectures=30, seeds=1, datasets=specs)
    ids = np.arange(30)
    add_scores(
        tmp_path / "results.h5", [ScoreTable("cifar10", ids, ("naswot",), ids[:, None], 8, 0)]
    )
    study = open_results(tmp_path)
    result = analyze_scores(study, study.errors(), bootstrap=20, permutations=0)
    assert result is not None
    row = result.correlations.set_index("score").loc["flops"]
    flops = study.as_trained("flops")["cifar10"]
    expected = -sps.spearmanr(flops, study.errors()["cifar10"]).statistic
    assert row["r"] == pytest.approx(expected)


# ---- the report section -----------------------------------------------------------------
class _Cells(HTMLParser):
    """Headings (h2) and the cells (text, data-value) of the table with id `scores`."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.rows: list[list[tuple[str, str | None]]] = []
        self._where = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "h2":
            self._where, self.headings = "h2", [*self.headings, ""]
        elif tag == "table":
            self._where = "scores" if found.get("id") == "scores" else ""
        elif tag == "tr" and self._where == "scores":
            self.rows.append([])
        elif tag == "td" and self._where == "scores":
            self.rows[-1].append(("", found.get("data-value")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "table"):
            self._where = ""

    def handle_data(self, data: str) -> None:
        if self._where == "h2":
            self.headings[-1] += data
        elif self._where == "scores" and self.rows and self.rows[-1]:
            text, value = self.rows[-1][-1]
            self.rows[-1][-1] = (text + data, value)


def test_the_report_shows_the_section_with_the_computed_numbers(
    scored: tuple[Path, Study], tmp_path: Path
) -> None:
    _, study = scored
    result = analyze(study, bootstrap=60, permutations=60)
    files = write_report(result, tmp_path)
    page = _Cells()
    page.feed(Path(files["report"]).read_text(encoding="utf-8"))
    at = page.headings.index("Ranking before training")
    assert page.headings[at - 1] == "What to use instead"
    rows = [r for r in page.rows if r]
    assert result.scores is not None and len(rows) == len(result.scores.correlations)
    for cells, (_, row) in zip(rows, result.scores.correlations.iterrows(), strict=True):
        assert (cells[0][0], cells[1][0]) == (row["dataset"], row["score"])
        assert float(cells[3][1]) == row["r"] and cells[3][0] == f"{round(row['r'], 2) + 0.0:.2f}"
        assert cells[7][0] == (row["vs_params"] or "–")
    csv = pd.read_csv(files["tables"]["scores_correlations"])
    np.testing.assert_allclose(csv["r"], result.scores.correlations["r"])
    assert {"scores_summary", "scores_mantel", "scores_seeds"} <= set(files["tables"])
    pixels = mpimg.imread(files["figures"]["scores"])
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05


def test_a_report_without_scores_has_no_such_section(analysis: Analysis, report: dict) -> None:
    assert analysis.scores is None
    assert "Ranking before training" not in Path(report["report"]).read_text(encoding="utf-8")
    assert not any(name.startswith("scores") for name in report["tables"])
