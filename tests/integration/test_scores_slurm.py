"""`anysweep score --cluster slurm` on the real local SLURM cluster: one array per dataset, a
task per block of architectures, with the dataset's resources but no GPU, submitted without
waiting (as prepare); datasets whose
score jobs are still queued or running are left alone by the next call; the files the
tasks write are the ones a local run writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.schema import read_score_file, read_score_inputs
from hpc.cli import main
from hpc.scheduling.scores import score_study, summary
from hpc.study.datasets import prepare_datasets
from hpc.study.population import sample_architectures
from hpc.study.spec import load_study

pytestmark = pytest.mark.slurm

STUDY = """\
[study]
architectures = 3
seeds = 2

[design]
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 1

[scores]
minibatch_size = 32
architectures_per_file = 2

[cluster]
gpus = 1
cpus = 1
mem_gb = 1
time_min = 5

[datasets.digits]

[datasets.digits_k3]
"""


def test_score_on_slurm_submits_an_array_per_dataset_and_stores_every_block(
    slurm_cluster, wait_for_job, tmp_path: Path, capsys
) -> None:
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    sample_architectures(study)
    prepare_datasets(study, progress=False)

    run = score_study(study, cluster="slurm", wait=False, progress=False)
    assert (run.run_id, run.planned, len(run.job_ids)) == ("Z0001", 12, 2)
    # Held, the arrays stay queued while the next call looks.
    slurm_cluster.client("scontrol", "hold", *run.job_ids)
    assert "submitted 2 array job(s)" in summary(run, study)
    shown = slurm_cluster.client("scontrol", "show", "job", run.job_ids[0])
    assert "gpu" not in shown.lower()  # scoring asks for no GPU, whatever [cluster] gpus says
    again = score_study(study, cluster="slurm", wait=False, progress=False)
    assert (again.run_id, again.busy) == ("", ("digits", "digits_k3"))
    assert not (tmp_path / "jobs" / "Z0002").exists()
    slurm_cluster.client("scontrol", "release", *run.job_ids)
    for job in run.job_ids:
        for task in (0, 1):
            assert wait_for_job(f"{job}_{task}", timeout_s=300) == "COMPLETED"

    for dataset in ("digits", "digits_k3"):
        first = read_score_file(study.layout.score_file(dataset, 0, 1))
        last = read_score_file(study.layout.score_file(dataset, 2, 3))
        assert first.arch_ids.tolist() == [0, 0, 1, 1] and last.arch_ids.tolist() == [2, 2]
        assert np.isfinite(first.values).all() and first.minibatch_size == 32
        inputs = read_score_inputs(study.layout.score_file(dataset, 0, 1))
        assert (inputs["minibatch_size"], inputs["seeds"]) == (32, [0, 1])
    manifests = sorted(
        p.relative_to(tmp_path / "jobs" / "Z0001")
        for p in (tmp_path / "jobs" / "Z0001").glob("*/*.json")
    )
    assert [str(p) for p in manifests] == [
        "digits/0.json",
        "digits/1.json",
        "digits_k3/0.json",
        "digits_k3/1.json",
    ]
    assert main(["score", str(tmp_path), "--cluster", "slurm"]) == 0
    assert "nothing to score: every score of the study is stored" in capsys.readouterr().out
