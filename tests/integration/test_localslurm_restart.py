"""`python -m hpc.localslurm restart-slurmd`: the node daemon restarts, a running job lives on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc import localslurm
from hpc.localslurm import processes

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]


def _running(cluster: localslurm.Cluster, job: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while cluster.client("squeue", "-h", "-j", job, "-o", "%T").strip() != "RUNNING":
        assert time.monotonic() < deadline, f"job {job} not running after {timeout_s} s"
        time.sleep(0.2)


def test_restart_slurmd_gives_a_new_daemon_and_a_running_job_completes(
    slurm_cluster: localslurm.Cluster, wait_for_job, tmp_path: Path
) -> None:
    job = slurm_cluster.client(
        "sbatch", "--parsable", f"--output={tmp_path}/out", "--wrap", "sleep 6; echo done"
    ).strip()
    _running(slurm_cluster, job)
    before = localslurm.daemon_states(slurm_cluster.root)["slurmd"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpc.localslurm",
            "restart-slurmd",
            "--root",
            str(slurm_cluster.root),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    after = localslurm.daemon_states(slurm_cluster.root)
    assert after["slurmd"] is not None and after["slurmd"] != before
    assert localslurm.is_up(slurm_cluster.root)
    assert wait_for_job(job, timeout_s=60) == "COMPLETED"
    assert (tmp_path / "out").read_text() == "done\n"


def test_restart_slurmd_on_a_cluster_that_is_down_names_it(tmp_path: Path) -> None:
    with pytest.raises(localslurm.LocalSlurmError, match=r"is not up; start it with"):
        localslurm.restart_slurmd(tmp_path / "none")
    assert processes.read_pid_file(tmp_path / "none" / "pids" / "slurmd.pid") is None
