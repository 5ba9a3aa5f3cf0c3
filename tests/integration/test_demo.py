"""`anysweep demo` end to end on a smaller configuration of the demo study, on real data:
interrupted mid-way and run again it completes without retraining a finished cell or
recomputing a stored score, and the table it prints and the report it writes (with its
"Ranking before training" section) hold the numbers analysis computes; with `--cluster
slurm` it runs the same way on the local SLURM cluster, scores included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from analysis.frame import open_results
from analysis.report import analyze
from analysis.schema import read_results
from hpc.study.packs import stored

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "hpc" / "study" / "presets" / "demo.toml"

# The demo preset's shape (reference, nested subsets, targets from other domains, two
# seeds) at a size that trains in about a minute on 2 cores.
SMALL_STUDY = """
[study]
reference = "fashion_mnist"
architectures = 4
seeds = 2
max_attempts = 2

[design]
space = "anynetx_a"
seed = 0
stages = 3
max_depth = 2
max_width = 64
stem = "imagenet"
stem_width = 16
resolution = 28
num_classes = 10
flops = [300_000, 1_500_000]

[recipe]
epochs = 2
batch_size = 64
base_lr = 0.8
augment = "none"

[datasets.fashion_mnist]
max_train = 400
max_test = 200

[datasets.fashion_mnist_k2]

[datasets.digits]
resolution = 16
"""
CELLS = 4 * 2 * 3
BOOTSTRAP = 200


def _demo(study: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc.cli",
            "demo",
            str(study),
            "--jobs",
            "2",
            "--bootstrap",
            str(BOOTSTRAP),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finished(study: Path) -> dict[str, tuple[str, int, float]]:
    """Each cell's record: its pack, offset and time written (a retraining changes them)."""
    out = {}
    for pack in (study / "results").glob("*/*.pack"):
        for record in stored(pack):
            cell = f"{pack.parent.name}/{record.result.arch_id}-s{record.result.seed}"
            assert cell not in out, f"{cell} has two records"
            out[cell] = (pack.name, record.offset, record.written)
    return out


def _score_files(study: Path) -> dict[Path, tuple[int, int]]:
    """Score files with their inode and modification time (a rewrite changes both)."""
    out = {}
    for path in (study / "scores").glob("*/*.h5"):
        stat = path.stat()
        out[path] = (stat.st_ino, stat.st_mtime_ns)
    return out


def _results(study: Path) -> list:
    return [r.result for pack in (study / "results").glob("*/*.pack") for r in stored(pack)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    study = tmp_path_factory.mktemp("demo") / "study"
    study.mkdir()
    (study / "study.toml").write_text(SMALL_STUDY)
    first = _demo(study)
    deadline = time.monotonic() + 300
    while len(_finished(study)) < 6 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert first.poll() is None, "the demo ended before it could be interrupted"
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    first_out, _ = first.communicate(timeout=120)
    before = _finished(study)
    scores_before = _score_files(study)
    second = _demo(study)
    second_out, _ = second.communicate(timeout=600)
    return {
        "study": study,
        "first": (first.returncode, first_out),
        "before": before,
        "scores_before": scores_before,
        "second": (second.returncode, second_out),
        "after": _finished(study),
        "scores_after": _score_files(study),
    }


def test_the_demo_preset_has_the_studys_shape() -> None:
    preset = tomllib.loads(PRESET.read_text())
    datasets = preset["datasets"]
    reference = preset["study"]["reference"]
    subsets = [d for d in datasets if d.startswith(f"{reference}_k")]
    targets = [d for d in datasets if d != reference and d not in subsets]
    assert preset["study"]["architectures"] >= 24
    assert preset["study"]["seeds"] >= 2
    assert len(subsets) >= 2
    assert len(targets) >= 3


def test_interrupted_demo_stops_and_keeps_finished_cells(demo_run: dict) -> None:
    code, out = demo_run["first"]
    assert code == 130, out[-2000:]
    assert "run the same command again to continue" in out
    assert 6 <= len(demo_run["before"]) < CELLS


def test_demo_run_again_completes_without_retraining_finished_cells(demo_run: dict) -> None:
    code, out = demo_run["second"]
    assert code == 0, out[-3000:]
    before, after = demo_run["before"], demo_run["after"]
    assert len(after) == CELLS
    for cell, stamp in before.items():
        assert after[cell] == stamp, f"{cell} was trained again"
    cells = _results(demo_run["study"])
    assert {c.status for c in cells} == {"done"}
    assert all(c.attempts == 1 for c in cells)


def test_demo_table_and_report_hold_the_numbers_analysis_computes(demo_run: dict) -> None:
    study: Path = demo_run["study"]
    _, out = demo_run["second"]
    analysis = analyze(
        open_results(study / "results.h5"), bootstrap=BOOTSTRAP, permutations=BOOTSTRAP
    )
    corr = analysis.correlations["spearman"]
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("digits")}
    assert "digits" in rows, out[-2000:]
    printed = [float(x) for x in re.findall(r"[+-]\d\.\d\d", rows["digits"])]
    headline = analysis.against.set_index("dataset").loc["digits"]  # the headline's resamples
    subset = corr.get("digits", "fashion_mnist_k2")
    expected = [headline["r"], headline["lo"], headline["hi"]]
    expected += [subset["r"], subset["lo"], subset["hi"]]
    assert printed == pytest.approx(expected, abs=0.006)
    assert rows["digits"].rstrip().endswith(f"{headline['ceiling']:.2f}")
    reliability = analysis.noise.set_index("dataset").loc["fashion_mnist", "reliability"]
    assert f"reliability of each dataset's mean over seeds: fashion_mnist {reliability:.2f}" in out
    assert "noise floor: seed-to-seed" not in out
    html = (study / "report" / "report.html").read_text()
    headline = analysis.headline.set_index("dataset").loc["digits"]
    assert f"{headline['r']:.2f}" in html
    assert len(list((study / "report" / "figures").glob("*.png"))) >= 5
    assert "report:" in out and str(study / "report" / "report.html") in out


def test_demo_scores_before_training_and_never_again(demo_run: dict) -> None:
    # Scores come before training, so the interrupted first run had stored them all.
    before, after = demo_run["scores_before"], demo_run["scores_after"]
    assert sorted(p.parent.name for p in before) == ["digits", "fashion_mnist", "fashion_mnist_k2"]
    assert after == before
    _, out = demo_run["second"]
    assert "nothing to score" not in out  # the run says nothing when there is nothing to do
    results = read_results(demo_run["study"] / "results.h5")
    assert sorted(results.scores) == ["digits", "fashion_mnist", "fashion_mnist_k2"]
    for table in results.scores.values():
        assert table.arch_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert table.seeds.tolist() == [0, 1] * 4
        assert table.minibatch_size == 64


def test_demo_report_shows_ranking_before_training(demo_run: dict) -> None:
    study: Path = demo_run["study"]
    analysis = analyze(
        open_results(study / "results.h5"), bootstrap=BOOTSTRAP, permutations=BOOTSTRAP
    )
    assert analysis.scores is not None
    html = (study / "report" / "report.html").read_text()
    assert "Ranking before training" in html
    table = analysis.scores.correlations
    assert sorted(set(table["dataset"])) == ["digits", "fashion_mnist", "fashion_mnist_k2"]
    assert {"naswot", "synflow", "params", "flops"} <= set(table["score"])
    assert len(analysis.scores.seeds) > 0  # two seeds: the seed-to-seed agreement table
    tables = study / "report" / "tables"
    assert (tables / "scores_correlations.csv").exists()
    assert (tables / "scores_seeds.csv").exists()
    assert (study / "report" / "figures" / "scores.png").exists()


@pytest.mark.slurm
def test_demo_runs_on_the_slurm_cluster(slurm_cluster, tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    cluster = "\n[cluster]\ngpus = 0\ncpus = 1\nmem_gb = 1\ntime_min = 5\n"
    (study / "study.toml").write_text(SMALL_STUDY.replace("seeds = 2", "seeds = 1") + cluster)
    demo = _demo(study, "--cluster", "slurm", "--poll", "1")
    out, _ = demo.communicate(timeout=600)
    assert demo.returncode == 0, out[-3000:]
    assert re.search(r"^digits\s+[+-]\d\.\d\d \[", out, re.MULTILINE), out[-2000:]
    assert str(study / "report" / "report.html") in out
    records = [json.loads(p.read_text()) for p in (study / "jobs").glob("*/record.json")]
    assert [r["cluster"] for r in records] == ["slurm"]
    arrays = {a["job_id"] for a in records[0]["arrays"]}
    results = read_results(study / "results.h5")
    for name in ("fashion_mnist", "fashion_mnist_k2", "digits"):
        columns = results.datasets[name].columns
        assert sorted(columns["arch_id"]) == [0, 1, 2, 3]
        assert {j.partition("_")[0] for j in columns["job_id"]} <= arrays
        assert results.scores[name].arch_ids.tolist() == [0, 1, 2, 3]
    assert "Ranking before training" in (study / "report" / "report.html").read_text()
