"""Faults on launched tasks, on the local Slurm cluster: a USR2 at any moment of a task's life
ends in a requeue or a clean stop, never a FAILED task; a requeue that Slurm refuses (or that
a preemption's SIGTERM kills) stops the chunk without charging an attempt; and status says
how a killed task ended and where its log is."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpc.localslurm import LocalSlurmError
from hpc.scheduling.launch import launch
from hpc.scheduling.records import read_records
from hpc.scheduling.status import format_status, study_status
from hpc.study.datasets import prepare_datasets
from hpc.study.packs import stored
from hpc.study.spec import load_study

pytestmark = pytest.mark.slurm

# One dataset, cells of 3 short epochs; a cell's estimate is its 30 s overhead, so `margin`
# decides how many cells share a chunk (0.5 of 5 min: one; 0.7: three).
STUDY = """\
[study]
architectures = {architectures}
seeds = 1
max_attempts = 2
device = "cpu"

[design]
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 3
batch_size = 64
base_lr = 1.0

[cluster]
gpus = 0
cpus = 1
mem_gb = 1
time_min = 5
margin = {margin}
throughput = 1e15
setup = {setup}

[datasets.digits]
resolution = 8
"""


def _study(root: Path, architectures: int, margin: float, setup: list[str] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    lines = "[" + ", ".join(f'"{line}"' for line in setup or []) + "]"
    text = STUDY.format(architectures=architectures, margin=margin, setup=lines)
    (root / "study.toml").write_text(text)
    study = load_study(root)
    prepare_datasets(study, progress=False)
    return study


def _until(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s} s")
        time.sleep(0.02)


def _history(cluster, task: str) -> list[str]:
    """Every run of a task as sacct remembers it (requeued runs included), oldest first."""
    rows = cluster.client("sacct", "-n", "-X", "-P", "-D", "-j", task, "-o", "JobID,State")
    return [state.split()[0] for row in rows.splitlines() for _, state in [row.split("|")]]


def _has_step(cluster, task: str) -> bool:
    """Whether the task's step runs and its first process no longer dies of USR2: the shell
    that starts the worker has run its first command (`trap "" USR2`), Python has not
    started or has only begun (microseconds after the step's process exists)."""
    steps = cluster.client("squeue", "-h", "-s", "-o", "%i").split()
    if f"{task}.0" not in steps:
        return False
    # scontrol listpids wants the array task's own job id, not "<array>_<index>".
    raw = cluster.client("squeue", "-h", "-j", task, "-o", "%A").strip()
    try:
        pids = cluster.client("scontrol", "listpids", raw).split()[5::5]
    except LocalSlurmError:  # the step ended between the two questions
        return False
    return any(_usr2_handled(pid) for pid in pids)


def _usr2_handled(pid: str) -> bool:
    """Whether the process ignores or catches SIGUSR2 (its default action ends it)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    masks = {
        k: int(v, 16)
        for k, _, v in (line.partition(":\t") for line in lines)
        if k in ("SigIgn", "SigCgt")
    }
    return any(mask & (1 << (signal.SIGUSR2 - 1)) for mask in masks.values())


def _task_log(study, record: str, task: str) -> Path:
    return study.layout.submitit_dir(record, "slurm") / f"{task}_0_log.out"


def _program(pid: str) -> str:
    """The name of the program a process runs ('' once it is gone)."""
    try:
        return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
    except OSError:
        return ""


def _records(study) -> list:
    """Every record of digits' cells, from the study's packs."""
    packs = sorted(study.layout.results_dir("digits").glob("*.pack"))
    return [record for pack in packs for record in stored(pack)]


def _cells_done_once(study, attempts: int = 1) -> None:
    records = [r.result for r in _records(study)]
    assert sorted(r.arch_id for r in records) == list(range(study.settings.architectures))
    for cell in records:
        assert (cell.status, cell.attempts, cell.epochs) == ("done", attempts, 3)


def test_usr2_in_a_tasks_first_moments_requeues_it_or_stops_it_never_fails_it(
    slurm_cluster, tmp_path
):
    # Two tasks of one cell each. Task 0 is signalled the moment its step's first process
    # has run its first command (USR2 ignored; Python not started, or only beginning); task 1
    # once submitit's runner says it is loading the chunk (the handler is in, torch is not
    # imported yet): it must be requeued.
    study = _study(tmp_path, architectures=2, margin=0.5)
    launched = launch(study, cluster="slurm")
    job = launched.job_ids[0]
    first, second = f"{job}_0", f"{job}_1"
    _until(lambda: _has_step(slurm_cluster, first), f"step of {first}")
    slurm_cluster.client("scancel", "--signal=USR2", first)
    log = _task_log(study, launched.record, second)
    _until(lambda: log.exists() and "Loading pickle" in log.read_text(), f"{second} starting")
    slurm_cluster.client("scancel", "--signal=USR2", second)
    assert slurm_cluster.wait(first, timeout_s=180) == "COMPLETED"
    assert slurm_cluster.wait(second, timeout_s=180) == "COMPLETED"
    assert "FAILED" not in _history(slurm_cluster, first)
    assert _history(slurm_cluster, second) == ["REQUEUED", "COMPLETED"]
    _cells_done_once(study)


def _refusing_scontrol(folder: Path) -> Path:
    """An `scontrol` that refuses the first requeue, is killed by SIGTERM in the second (as
    in a real preemption) and passes every other command to the real one."""
    folder.mkdir()
    script = folder / "scontrol"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = requeue ]; then\n'
        f'  echo "$*" >> {folder}/requeues\n'
        f'  if [ "$(wc -l < {folder}/requeues)" -le 1 ]; then\n'
        '    echo "scontrol: error: Requeue of job refused" >&2; exit 1\n'
        "  fi\n"
        "  kill -TERM $$\n"
        "fi\n"
        f'exec {shutil.which("scontrol")} "$@"\n'
    )
    script.chmod(0o755)
    return folder


def _interrupt_in_second_epoch(cluster, study, job: str) -> str:
    """USR2 once the chunk's first cell has finished an epoch in this task (its second, or
    its third when it resumed after its first); the task's final state."""
    log = study.layout.cell("digits", 0, 0).log

    def epochs() -> int:
        return len(re.findall(r"epoch \d/3:", log.read_text())) if log.exists() else 0

    before = epochs()
    _until(lambda: epochs() > before, "an epoch of digits/0-s0")
    cluster.client("scancel", "--signal=USR2", job)
    return cluster.wait(job, timeout_s=180)


def test_a_refused_requeue_stops_the_chunk_and_charges_no_attempt(slurm_cluster, tmp_path):
    fake = _refusing_scontrol(tmp_path / "bin")
    study = _study(tmp_path / "study", 2, margin=0.7, setup=[f"export PATH={fake}:$PATH"])
    for round_ in (1, 2):  # refused, then killed by SIGTERM
        launched = launch(study, cluster="slurm")
        job = launched.job_ids[0]
        assert _interrupt_in_second_epoch(slurm_cluster, study, job) == "COMPLETED"
        assert len((fake / "requeues").read_text().splitlines()) == round_
        assert not [r for r in _records(study) if r.result.arch_id == 0]
        assert not study.layout.cell("digits", 1, 0).log.exists()  # the chunk stopped
        # Accounting may list the ended task a moment after it ended: look until it does.
        deadline = time.monotonic() + 60
        counts = study_status(study).counts["digits"]
        while counts["missing"] != 2 and time.monotonic() < deadline:
            time.sleep(1)
            counts = study_status(study).counts["digits"]
        assert (counts["missing"], counts["failed"]) == (2, 0), counts
        task_log = _task_log(study, launched.record, job).read_text()
        assert "the requeue failed" in task_log and "the next launch resumes" in task_log
    job = launch(study, cluster="slurm").job_ids[0]
    assert slurm_cluster.wait(job, timeout_s=180) == "COMPLETED"
    _cells_done_once(study)
    [log] = [r.log for r in _records(study) if r.result.arch_id == 0]
    assert log.count("attempt 1/2") == 3 and log.count("resumed after epoch") == 2


def test_status_shows_how_a_killed_task_ended_and_where_its_log_is(
    slurm_cluster, tmp_path, monkeypatch
):
    import hpc.scheduling.schedulers.slurm as slurm

    study = _study(tmp_path, architectures=2, margin=0.7)
    launched = launch(study, cluster="slurm")
    job = launched.job_ids[0]
    log = study.layout.cell("digits", 0, 0).log
    _until(lambda: log.exists() and "epoch 1/3:" in log.read_text(), "first epoch of 0-s0")
    pids = slurm_cluster.client("scontrol", "listpids", job).split()[5::5]
    workers = [p for p in pids if _program(p).startswith("python")]
    assert workers
    subprocess.run(["kill", "-KILL", *workers], check=True)
    assert slurm_cluster.wait(job, timeout_s=120) == "FAILED"
    # Accounting learns of the end a moment after the controller: once it lists the task,
    # one query serves the whole refresh.
    records = read_records(study)
    _until(lambda: slurm.sacct_states(study, records), "the task in accounting", 60)
    calls = []
    client = slurm._client
    monkeypatch.setattr(slurm, "_client", lambda argv, **kw: calls.append(argv[0]) or client(argv))
    status = study_status(study)
    assert calls == ["sacct"]  # one query for the whole refresh
    assert status.counts["digits"]["missing"] == 2
    [stopped] = status.stopped
    assert (stopped["task"], stopped["state"]) == (job, "FAILED")
    assert stopped["cells"] == ["digits/0-s0", "digits/1-s0"]
    assert stopped["log"] == str(_task_log(study, launched.record, job))
    assert f"{job} FAILED" in format_status(status)
