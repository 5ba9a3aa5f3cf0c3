"""The local SLURM cluster: its daemons' bookkeeping, and that it schedules real jobs,
fake GPUs and accounting as a cluster would."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hpc import localslurm, procfs
from hpc.localslurm import processes


def _sbatch(cluster: localslurm.Cluster, folder: Path, *options: str) -> str:
    """Submit a batch job that runs in `folder`; its job id."""
    return cluster.client(
        "sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/slurm-%j.out", *options
    ).strip()


# --- bookkeeping, no cluster needed -------------------------------------------------------


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen(["true"])
    record = processes.PidRecord(child.pid, int(procfs.stat_fields(child.pid)[19]))
    deadline = time.monotonic() + 5
    while procfs.stat_fields(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procfs.stat_fields(child.pid)[0] == "Z"  # not reaped yet: still in /proc
    assert not processes.is_alive(record)
    child.wait()


def test_a_reused_pid_is_not_the_recorded_process() -> None:
    start_time = int(procfs.stat_fields(os.getpid())[19])
    assert processes.is_alive(processes.PidRecord(os.getpid(), start_time))
    assert not processes.is_alive(processes.PidRecord(os.getpid(), start_time + 1))


def test_terminate_stops_a_spawned_daemon_and_what_it_forked(tmp_path: Path) -> None:
    leader = processes.spawn(
        ["sh", "-c", "sleep 60 & sleep 60"], tmp_path / "d.pid", tmp_path / "d.log"
    )
    deadline = time.monotonic() + 5
    while len(processes.session_members(leader)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    members = processes.session_members(leader)
    assert len(members) == 2
    processes.terminate([leader], timeout_s=2)
    assert [r for r in [leader, *members] if processes.is_alive(r)] == []
    assert processes.read_pid_file(tmp_path / "d.pid") == leader


def test_stop_without_a_cluster_reports_nothing_was_running(tmp_path: Path) -> None:
    assert localslurm.stop(tmp_path / "none") is False
    assert localslurm.is_up(tmp_path / "none") is False


def test_start_refuses_a_root_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(localslurm.LocalSlurmError, match="thesis.tex"):
        localslurm.start(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_cluster_at_rejects_a_config_that_is_not_a_local_cluster(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "slurm.conf").write_text("ClusterName=elsewhere\n")
    assert localslurm.cluster_at(tmp_path / "etc" / "slurm.conf") is None


# --- the running cluster ------------------------------------------------------------------


@pytest.mark.slurm
def test_start_when_up_keeps_the_running_daemons(slurm_cluster: localslurm.Cluster) -> None:
    before = localslurm.daemon_states(slurm_cluster.root)
    again = localslurm.start(slurm_cluster.root)
    assert again == slurm_cluster
    assert localslurm.daemon_states(slurm_cluster.root) == before


@pytest.mark.slurm
def test_node_offers_two_gpus_and_every_cpu(slurm_cluster: localslurm.Cluster) -> None:
    node = slurm_cluster.client("scontrol", "show", "node", "localhost")
    assert "Gres=gpu:2" in node
    assert f"CPUTot={slurm_cluster.cpus}" in node
    assert slurm_cluster.client("sinfo", "-h", "-o", "%G").split() == ["gpu:2"]


@pytest.mark.slurm
def test_wrapped_job_runs_and_writes_a_file(
    slurm_cluster: localslurm.Cluster, wait_for_job, tmp_path: Path
) -> None:
    job = _sbatch(slurm_cluster, tmp_path, "--wrap", "echo $((6 * 7)) > answer.txt")
    assert wait_for_job(job) == "COMPLETED"
    assert (tmp_path / "answer.txt").read_text() == "42\n"


@pytest.mark.slurm
def test_sacct_records_a_failed_jobs_exit_code(
    slurm_cluster: localslurm.Cluster, wait_for_job, tmp_path: Path
) -> None:
    job = _sbatch(slurm_cluster, tmp_path, "--wrap", "exit 3")
    assert wait_for_job(job) == "FAILED"
    row = slurm_cluster.client("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,ExitCode")
    assert row.split() == [f"{job}|3:0"]


@pytest.mark.slurm
@pytest.mark.parametrize(("gres", "visible"), [("gpu:1", "0"), ("gpu:2", "0,1")])
def test_gpu_job_sees_its_fake_gpus_in_cuda_visible_devices(
    slurm_cluster: localslurm.Cluster, wait_for_job, tmp_path: Path, gres: str, visible: str
) -> None:
    job = _sbatch(
        slurm_cluster, tmp_path, f"--gres={gres}", "--wrap", "echo $CUDA_VISIBLE_DEVICES > gpus.txt"
    )
    assert wait_for_job(job) == "COMPLETED"
    assert (tmp_path / "gpus.txt").read_text() == f"{visible}\n"
