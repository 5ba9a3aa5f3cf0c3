"""Rendered sbatch arrays on the real local SLURM cluster: split at MaxArraySize, submitted
with `sbatch`, one task preempted with USR2 and requeued, and every cell collected once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from analysis.schema import read_results
from hpc.scheduling.schedulers.sbatch import render_scripts
from hpc.scheduling.status import study_status
from hpc.study.collect import collect
from hpc.study.datasets import prepare_datasets
from hpc.study.spec import load_study

pytestmark = pytest.mark.slurm

# 5 architectures on digits; a margin this small leaves room for one cell per chunk, so the
# 5 chunks need two arrays under MaxArraySize=4.
STUDY = """\
[study]
architectures = 5
seeds = 1

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
margin = 0.1

[datasets.digits]
"""


def test_rendered_arrays_split_survive_preemption_and_collect_each_cell_once(
    slurm_cluster, wait_for_job, tmp_path: Path
) -> None:
    if slurm_cluster.max_array_size > 4:
        why = "start the cluster with --max-array-size 4 (make test does) to split 5 tasks"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    prepare_datasets(study, progress=False)
    rendered = render_scripts(study)
    size = slurm_cluster.max_array_size
    assert [len(a.chunks) for a in rendered.plan.arrays] == [size, 5 - size]
    first = rendered.scripts[0].read_text()
    assert f"#SBATCH --array=0-{size - 1}%256" in first
    assert "#SBATCH --signal=B:USR2@120" in first and "#SBATCH --requeue" in first
    assert f"-m hpc.worker --array {rendered.scripts[0].with_suffix('.json')}" in first

    env = {**os.environ, **slurm_cluster.env()}
    out = subprocess.run(
        ["bash", str(rendered.submit)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout
    job_ids = [
        line.split()[-1] for line in out.splitlines() if line.startswith("Submitted batch job")
    ]
    assert len(job_ids) == 2

    # Queued by hand, yet status knows them by their job names.
    counts = study_status(study).counts["digits"]
    assert counts["queued"] + counts["running"] + counts["done"] == 5

    # Preempt a task once its script runs (it prints its first line before the worker starts).
    victim = f"{job_ids[0]}_1"
    log = tmp_path / "logs" / "slurm" / f"{victim}.out"
    deadline = time.monotonic() + 120
    while not (log.exists() and f"anysweep: task {victim} of " in log.read_text()):
        assert time.monotonic() < deadline, f"{victim} never ran"
        time.sleep(0.2)
    # scancel retries while the task is being requeued and would signal its next run too:
    # the first delivery is immediate, so it gets a moment only.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["scancel", "--batch", "--signal=USR2", victim], env=env, timeout=3)

    tasks = [f"{job_ids[0]}_{i}" for i in range(size)] + [
        f"{job_ids[1]}_{i}" for i in range(5 - size)
    ]
    assert [wait_for_job(t, timeout_s=240) for t in tasks] == ["COMPLETED"] * 5
    assert log.read_text().count(f"anysweep: task {victim} of ") >= 2  # ran again after the requeue

    collected = collect(study)
    columns = read_results(tmp_path / "results.h5").datasets["digits"].columns
    cells = sorted(zip(columns["arch_id"], columns["seed"], strict=True))
    assert (collected.cells, collected.skipped) == (5, ())
    assert cells == [(a, 0) for a in range(5)]
    assert set(columns["status"]) == {"done"}
    assert list(columns["attempts"]) == [1] * 5  # a preemption is not a failed attempt
