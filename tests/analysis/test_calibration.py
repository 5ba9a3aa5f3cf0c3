"""The report's intervals hold the truth about 95 % of the time on fresh studies of known
truth (a small version of benchmarks/calibration.py), and an interval half as wide does
not: the check can tell a calibrated interval from an overconfident one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration.py"


@pytest.fixture(scope="module")
def calibration():
    spec = importlib.util.spec_from_file_location("calibration", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def studies(calibration):
    # 200 fresh studies of 24 architectures, one seed: the reference, a subset and two
    # targets (true latent correlation 0.5 and 0); few resamples, the headline unextended.
    config = calibration.Config(
        24, 1, bootstrap=200, headline_error=1.0, names=("ref", "sub", "t_mid", "t_null")
    )
    return calibration.run_point(config, 200, offset=10_000)


def _coverage(calibration, studies, kind: str, shrink: float = 1.0) -> float:
    table = calibration.score(studies, seeds=1, shrink=shrink).loc[kind]
    return float((table["coverage"] * table["studies"]).sum() / table["studies"].sum())


@pytest.mark.parametrize(("kind", "count"), [("spearman", 600), ("proxy_diff", 200)])
def test_intervals_cover_the_population_value_and_half_as_wide_ones_do_not(
    calibration, studies, kind, count
):
    table = calibration.score(studies, seeds=1).loc[kind]
    assert int(table["studies"].sum()) == count
    assert _coverage(calibration, studies, kind) >= 0.88
    assert _coverage(calibration, studies, kind, shrink=0.5) < 0.88


def test_population_values_follow_from_the_model(calibration):
    truth = calibration.truths(seeds=1)
    assert truth[("spearman", "t_null")] == 0.0
    # t_mid: latent 0.5; means of one seed with reliabilities 0.8 and 0.64.
    rho = 0.5 * (0.8 * 0.64) ** 0.5
    assert truth[("pearson", "t_mid")] == pytest.approx(rho)
    assert truth[("spearman", "t_mid")] == pytest.approx(
        6 / 3.141592653589793 * 0.5 * rho, abs=2e-3
    )
