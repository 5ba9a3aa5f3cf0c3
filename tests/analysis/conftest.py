"""Shared fixtures of the analysis tests: one small synthetic study, analysed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.frame import StudyResults, open_results
from analysis.report import Analysis, analyze, write_report
from analysis.synthetic import SyntheticTruth, synthetic_results

RESAMPLES = 200  # bootstrap resamples and permutations: enough to test, fast to run


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticTruth]:
    """A study folder with results.h5: 120 architectures, ImageNet, 4 subsets, 8 targets,
    2 seeds, some missing, diverged and failed cells."""
    folder = tmp_path_factory.mktemp("study")
    truth = synthetic_results(
        folder / "results.h5",
        architectures=120,
        seeds=2,
        missing=0.02,
        diverged=0.02,
        failed=0.01,
        seed=3,
    )
    return folder, truth


@pytest.fixture(scope="session")
def study(study_dir: tuple[Path, SyntheticTruth]) -> StudyResults:
    return open_results(study_dir[0])


@pytest.fixture(scope="session")
def analysis(study: StudyResults) -> Analysis:
    return analyze(study, bootstrap=RESAMPLES, permutations=RESAMPLES, seed=0)


@pytest.fixture(scope="session")
def report(analysis: Analysis, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_report(analysis, tmp_path_factory.mktemp("report"))
