"""`anysweep analyze` on a results.h5 it cannot use: one line naming the problem and what to
do, exit 2, no report written."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.synthetic import SyntheticDataset, synthetic_results
from hpc.cli import main

DATASETS = [
    SyntheticDataset("imagenet", 1000, 224, 1_000, 500, rho=1.0),
    SyntheticDataset("cifar10", 10, 32, 500, 100, rho=0.5),
]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results.h5"
    synthetic_results(path, architectures=5, seeds=1, datasets=DATASETS, curves=False)
    return path


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_truncated_results_file_is_one_line_naming_it(results, tmp_path, capsys):
    results.write_bytes(results.read_bytes()[:2000])
    assert main(["analyze", str(results), "--out", str(tmp_path / "report")]) == 2
    lines = _errors(capsys)
    assert len(lines) == 1
    assert f"{results} is not a readable results.h5 (" in lines[0]
    assert "run 'anysweep collect' in the study again" in lines[0]
    assert not (tmp_path / "report" / "report.html").exists()


def test_a_file_that_is_no_hdf5_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "results.h5"
    path.write_text("not hdf5\n")
    assert main(["analyze", str(tmp_path)]) == 2
    lines = _errors(capsys)
    assert len(lines) == 1 and "file signature not found" in lines[0]


def test_results_without_a_finished_cell_are_refused_not_reported_as_nans(tmp_path, capsys):
    path = tmp_path / "results.h5"
    synthetic_results(path, architectures=5, seeds=1, datasets=DATASETS, missing=1.0, curves=False)
    assert main(["analyze", str(path), "--out", str(tmp_path / "report")]) == 2
    assert _errors(capsys) == [
        f"anysweep analyze: error: {path} holds no finished cell (0 cells, none done): "
        "nothing to analyse; train first ('anysweep run' or 'anysweep launch'), then "
        "'anysweep collect'"
    ]
    assert not (tmp_path / "report" / "report.html").exists()


def test_only_failed_cells_count_as_no_finished_cell(tmp_path, capsys):
    path = tmp_path / "results.h5"
    synthetic_results(path, architectures=5, seeds=1, datasets=DATASETS, failed=1.0, curves=False)
    assert main(["analyze", str(path), "--out", str(tmp_path / "report")]) == 2
    assert "holds no finished cell (10 cells, none done)" in _errors(capsys)[0]
