"""A study whose prepared data lives outside the study folder (`[study] data_dir`): the workers
open that folder, locally and on the local SLURM cluster, and every cell finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.schema import read_results
from hpc.cli import main
from hpc.study.spec import load_study

STUDY = """\
[study]
architectures = 2
seeds = 1
data_dir = "{data_dir}"
max_attempts = 1

[design]
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 1
batch_size = 256

[cluster]
gpus = 0
cpus = 1
mem_gb = 1
time_min = 5

[datasets.digits]
"""


def _study_outside(tmp_path: Path) -> Path:
    root, shared = tmp_path / "study", tmp_path / "shared" / "betons"
    root.mkdir()
    (root / "study.toml").write_text(STUDY.format(data_dir=shared))
    assert main(["prepare", str(root)]) == 0
    assert load_study(root).data_dir == shared
    assert not (root / "data").exists()
    return root


def _finished(root: Path) -> list[tuple[int, int, str]]:
    digits = read_results(root / "results.h5").datasets["digits"]
    columns = digits.columns
    return sorted(zip(columns["arch_id"], columns["seed"], columns["status"], strict=True))


def test_a_local_run_reads_prepared_data_from_a_data_dir_outside_the_study(
    tmp_path: Path,
) -> None:
    root = _study_outside(tmp_path)
    assert main(["run", str(root), "--cluster", "local", "--poll", "1", "--no-analyze"]) == 0
    assert _finished(root) == [(0, 0, "done"), (1, 0, "done")]
    assert not (root / "data").exists()


@pytest.mark.slurm
def test_a_slurm_run_reads_prepared_data_from_a_data_dir_outside_the_study(
    slurm_cluster, tmp_path: Path
) -> None:
    root = _study_outside(tmp_path)
    assert main(["run", str(root), "--cluster", "slurm", "--poll", "1", "--no-analyze"]) == 0
    assert _finished(root) == [(0, 0, "done"), (1, 0, "done")]
    assert not (root / "data").exists()
