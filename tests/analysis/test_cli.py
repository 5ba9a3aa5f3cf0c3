"""`anysweep analyze` end to end, and the promise that analysis never pulls in torch or ffcv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.synthetic import SyntheticDataset, synthetic_results
from hpc.cli import main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ffcv")


def _python(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _imported(stderr: str) -> set[str]:
    """Top-level modules named in -X importtime output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder of 40 architectures on ImageNet, one subset and two targets."""
    folder = tmp_path_factory.mktemp("small")
    datasets = [
        SyntheticDataset("imagenet", 1000, 224, 1_281_167, 50_000, rho=1.0),
        SyntheticDataset("imagenet_k10", 10, 224, 13_000, 500, rho=0.7, parent="imagenet"),
        SyntheticDataset("cifar10", 10, 32, 50_000, 10_000, rho=0.5),
        SyntheticDataset("concrete", 2, 64, 32_000, 8_000, rho=-0.4),
    ]
    synthetic_results(
        folder / "results.h5", architectures=40, seeds=2, datasets=datasets, curves=False
    )
    return folder


def test_analyze_writes_the_report_and_imports_neither_torch_nor_ffcv(small_study, tmp_path):
    out = tmp_path / "report"
    done = _python(
        "-X",
        "importtime",
        "-m",
        "hpc.cli",
        "analyze",
        str(small_study),
        "--out",
        str(out),
        "--bootstrap",
        "30",
        "--permutations",
        "30",
        "--json",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = _imported(done.stderr)
    assert "analysis" in imported and "pandas" in imported
    assert not set(HEAVY) & imported
    summary = json.loads(done.stdout)
    assert summary["reference"] == "imagenet"
    assert [row["dataset"] for row in summary["headline"]] == ["cifar10", "concrete"]
    assert (
        Path(summary["report"]) == out / "report.html"
        and summary["report_bytes"] == (out / "report.html").stat().st_size > 10_000
    )
    assert (out / "tables" / "headline.csv").is_file() and (
        out / "figures" / "heatmap.png"
    ).is_file()


def test_import_analysis_loads_nothing_heavy():
    done = _python(
        "-c",
        "import analysis, sys; print(sorted(m for m in ('numpy', 'pandas', 'scipy', "
        "'matplotlib', 'h5py', 'torch', 'ffcv') if m in sys.modules))",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_reading_results_for_status_imports_neither_torch_nor_ffcv(small_study):
    code = (
        "import sys; from analysis.frame import open_results; from analysis import schema; "
        f"s = open_results({str(small_study)!r}); s.errors(); "
        "print(sorted(m for m in ('torch', 'ffcv') if m in sys.modules))"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_unknown_reference_is_an_error_naming_the_datasets(small_study, capsys):
    assert main(["analyze", str(small_study), "--reference", "imagenet21k"]) == 2
    err = capsys.readouterr().err
    assert "reference dataset 'imagenet21k' is not in" in err and "'cifar10'" in err


def test_a_folder_without_results_is_an_error_naming_the_remedy(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "anysweep collect" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--bootstrap", "--permutations"])
def test_negative_resample_counts_are_rejected(small_study, capsys, option):
    assert main(["analyze", str(small_study), option, "-1"]) == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_reference_defaults_to_the_one_the_study_declares(tmp_path, capsys):
    datasets = [
        SyntheticDataset("places365", 365, 224, 1_800_000, 36_500, rho=1.0),
        SyntheticDataset("places365_k20", 20, 224, 100_000, 2_000, rho=0.7, parent="places365"),
        SyntheticDataset("mine", 5, 64, 5_000, 1_000, rho=0.4),
    ]
    synthetic_results(
        tmp_path / "results.h5",
        architectures=30,
        seeds=1,
        datasets=datasets,
        reference="places365",
        curves=False,
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "results.h5"),
                "--out",
                str(out),
                "--bootstrap",
                "10",
                "--permutations",
                "10",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "correlation of top1_err with places365" in text
    assert "  mine " in text
    size = (out / "report.html").stat().st_size / 1e6
    assert f"report: {out / 'report.html'} ({size:.1f} MB)" in text
