"""submitit against the real local SLURM cluster: arrays, failures, and the MaxArraySize limit
that submitit does not split around (so the project must)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import submitit

from hpc import localslurm
from hpc.localslurm import probe

pytestmark = pytest.mark.slurm


def _executor(folder: Path) -> submitit.AutoExecutor:
    # cluster= explicitly: AutoExecutor picks slurm whenever srun is on PATH.
    executor = submitit.AutoExecutor(folder, cluster="slurm")
    # Slurm signals USR2 up to signal_delay_s (90) + 30 s before the time limit: a limit of a
    # few minutes would signal jobs that are still starting.
    executor.update_parameters(timeout_min=10, slurm_partition="debug")
    return executor


def test_map_array_returns_every_tasks_result(
    slurm_cluster: localslurm.Cluster, tmp_path: Path
) -> None:
    jobs = _executor(tmp_path).map_array(probe.square, [2, 3, 5])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one array, three tasks
    assert [job.result() for job in jobs] == [4, 9, 25]


def test_failed_job_raises_failed_job_error_with_the_remote_traceback(
    slurm_cluster: localslurm.Cluster, wait_for_job, tmp_path: Path
) -> None:
    job = _executor(tmp_path).submit(probe.fail, "bad batch 17")
    with pytest.raises(submitit.core.utils.FailedJobError) as raised:
        job.result()
    assert "ValueError: bad batch 17" in str(raised.value)
    assert 'probe.py", line' in str(raised.value)
    # submitit reads states from sacct: accounting must see the failure too.
    assert wait_for_job(job.job_id) == "FAILED"
    assert job.get_info()["State"] == "FAILED"


@pytest.fixture
def max_array_size(slurm_cluster: localslurm.Cluster) -> int:
    """The cluster's MaxArraySize, when small enough to submit one more task than it allows."""
    if slurm_cluster.max_array_size > 16:
        why = (
            f"MaxArraySize={slurm_cluster.max_array_size} is too large to exceed here; "
            "start the cluster with --max-array-size 4 (make test does)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    return slurm_cluster.max_array_size


def test_array_larger_than_max_array_size_is_refused_at_submission(
    max_array_size: int, tmp_path: Path
) -> None:
    too_many = range(max_array_size + 1)
    with pytest.raises(submitit.core.utils.FailedJobError, match="Invalid job array specification"):
        _executor(tmp_path).map_array(probe.square, too_many)


def test_array_split_at_max_array_size_runs_every_task(max_array_size: int, tmp_path: Path) -> None:
    values = list(range(max_array_size + 2))
    executor = _executor(tmp_path)
    chunks = [values[i : i + max_array_size] for i in range(0, len(values), max_array_size)]
    jobs = [job for chunk in chunks for job in executor.map_array(probe.square, chunk)]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 2
    assert [job.result() for job in jobs] == [v * v for v in values]
