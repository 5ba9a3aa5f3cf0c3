"""status: each cell's state from result files, launch records and one scheduler query, the
GPU-hours, the failed cells with their error, and no torch or ffcv on the way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpc.procfs import process_start
from hpc.scheduling.records import ArrayRecord, job_name, write_record
from hpc.scheduling.schedulers import SchedulerError
from hpc.scheduling.status import (
    CellLogs,
    active_cells,
    cell_logs,
    cell_states,
    format_status,
    study_status,
    tasks,
)
from hpc.study.population import sample_architectures
from hpc.study.results import Cell
from hpc.study.spec import load_study

STUDY = """\
[study]
architectures = 3
seeds = 2
max_attempts = 2

[design]
max_depth = 2
max_width = 32
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 1

[cluster]
gpus = 2

[datasets.digits]

[datasets.fashion_mnist]
max_train = 300
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    sample_architectures(study)
    return study


@pytest.fixture
def lane():
    """A live process standing in for a local lane (its pid and start time are recorded)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield {"pid": proc.pid, "start": process_start(proc.pid)}
    proc.kill()
    proc.wait()


def _local_record(study, lane_info: dict, queued: list, running: list) -> None:
    """A local launch whose first chunk a lane has claimed and whose second waits."""
    folder = study.root / "jobs" / "L0001"
    (folder / "queue").mkdir(parents=True)
    (folder / "claimed").mkdir()
    (folder / "claimed" / "00000-digits-0.0.lane0.json").write_text("{}")
    (folder / "queue" / "00001-digits-0.1.json").write_text("{}")
    arrays = [
        {
            "label": "digits-0",
            "dataset": "digits",
            "job_name": job_name(study, "L0001", "digits-0"),
            "job_id": None,
            "tasks": [
                {"chunk": "00000-digits-0.0", "cells": running},
                {"chunk": "00001-digits-0.1", "cells": queued},
            ],
        }
    ]
    records = [ArrayRecord.from_dict(a) for a in arrays]
    write_record(study, "L0001", "local", records, {"lanes": [lane_info]})


def test_cells_are_done_running_queued_failed_diverged_or_missing(study, lane, record) -> None:
    record(study, "digits", 0, 0, "done")
    record(study, "digits", 0, 1, "diverged")
    record(
        study, "fashion_mnist", 0, 0, "failed", attempts=2, error="Traceback\nOSError: disk full"
    )
    # The claimed chunk ran (0, 0) already; (1, 0) runs now, (1, 1) waits behind it.
    _local_record(study, lane, queued=[[2, 0], [2, 1]], running=[[0, 0], [1, 0], [1, 1]])
    states = cell_states(study)
    assert states[Cell("digits", 0, 0)] == "done"
    assert states[Cell("digits", 0, 1)] == "diverged"
    assert states[Cell("digits", 1, 0)] == "running"
    assert states[Cell("digits", 1, 1)] == "queued"
    assert states[Cell("digits", 2, 0)] == "queued"
    assert states[Cell("fashion_mnist", 0, 0)] == "failed"
    assert states[Cell("fashion_mnist", 1, 1)] == "missing"
    assert active_cells(study) == {
        Cell("digits", a, s) for a, s in ((0, 0), (1, 0), (1, 1), (2, 0), (2, 1))
    }


def test_cells_of_a_dead_lane_are_missing_again(study, lane) -> None:
    _local_record(
        study, {"pid": lane["pid"], "start": lane["start"] + 1}, queued=[[2, 0]], running=[[1, 0]]
    )
    assert {t.state for t in tasks(study)} == {"ended"}
    assert cell_states(study)[Cell("digits", 1, 0)] == "missing"
    assert active_cells(study) == set()


def test_status_counts_hours_and_failed_cells_with_their_last_error_line(
    study, lane, record
) -> None:
    record(study, "digits", 0, 0, "done", train_seconds=1800.0)
    record(
        study,
        "fashion_mnist",
        2,
        1,
        "failed",
        attempts=1,
        train_seconds=np.nan,
        error="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n",
    )
    _local_record(study, lane, queued=[[2, 0]], running=[[1, 0]])
    status = study_status(study)
    assert status.counts["digits"] == {
        "done": 1,
        "running": 1,
        "queued": 1,
        "failed": 0,
        "diverged": 0,
        "stale": 0,
        "missing": 3,
    }
    assert status.counts["fashion_mnist"]["failed"] == 1
    assert status.counts["fashion_mnist"]["missing"] == 5
    assert status.failed == [
        {"cell": "fashion_mnist/2-s1", "attempts": 1, "error": "RuntimeError: CUDA out of memory"}
    ]
    assert status.gpu_hours_spent == pytest.approx(1.0)  # 30 minutes on 2 GPUs
    assert status.gpu_hours_remaining > 0
    assert status.tasks_active == 2
    text = format_status(status)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:5]}
    assert rows["digits"] == ["1", "1", "1", "0", "0", "0", "3", "6"]
    assert rows["all"] == ["1", "1", "1", "1", "0", "0", "8", "12"]
    assert "failed cells (1), by error:\n        1  RuntimeError: CUDA out of memory\n" in text
    assert "           fashion_mnist/2-s1 (attempt 1)" in text


def _slurm_record(study, record: str, arrays: int, tasks_per_array: int) -> None:
    write_record(
        study,
        record,
        "slurm",
        [
            ArrayRecord.from_dict(
                {
                    "label": f"digits-{k}",
                    "dataset": "digits",
                    "job_name": job_name(study, record, f"digits-{k}"),
                    "job_id": str(100 + k),
                    "tasks": [
                        {"chunk": f"digits-{k}.{i}", "cells": [[i % 3, k % 2]]}
                        for i in range(tasks_per_array)
                    ],
                }
            )
            for k in range(arrays)
        ],
    )


def test_one_squeue_call_answers_for_every_task(study, monkeypatch) -> None:
    _slurm_record(study, "L0001", arrays=50, tasks_per_array=40)
    calls = []
    name0 = job_name(study, "L0001", "digits-0")
    name1 = job_name(study, "L0001", "digits-1")

    def fake_run(argv, **kwargs):
        calls.append(argv)
        out = f"100_0|{name0}|RUNNING\n100_1|{name0}|PENDING\n101_2|{name1}|REQUEUED\n7|other-job|RUNNING\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    found = tasks(study)
    assert len(calls) == 1 and calls[0][0] == "squeue"
    assert len(found) == 2000
    states = {(t.label, t.index): t.state for t in found if t.state != "ended"}
    assert states == {
        ("digits-0", 0): "running",
        ("digits-0", 1): "queued",
        ("digits-1", 2): "queued",
    }


def test_failing_squeue_is_an_error_not_a_guess(study, monkeypatch) -> None:
    _slurm_record(study, "L0001", arrays=1, tasks_per_array=2)
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda argv, **kw: subprocess.CompletedProcess(
            argv, 1, "", "slurm_load_jobs error: Unable to contact slurm controller"
        ),
    )
    with pytest.raises(SchedulerError, match="Unable to contact slurm controller"):
        tasks(study)


def test_status_json_without_importing_torch_or_ffcv(study, record) -> None:
    record(study, "digits", 1, 1, "done", train_seconds=36.0)
    code = (
        "import json, sys\n"
        "from hpc.cli import main\n"
        f"assert main(['status', {str(study.root)!r}, '--json']) == 0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ffcv'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report, _, modules = done.stdout.rpartition("\n[")
    assert json.loads("[" + modules) == []
    data = json.loads(report)
    assert data["counts"]["digits"]["done"] == 1
    assert data["gpu_hours_spent"] == pytest.approx(0.02)  # 36 s on 2 GPUs


def test_logs_finds_the_records_logs_the_running_log_and_the_lane_log(study, lane, record) -> None:
    _local_record(study, lane, queued=[[2, 0]], running=[[1, 0]])
    record(study, "digits", 1, 0, "failed", log="attempt 1: out of memory\n")
    own = study.root / "logs" / "digits" / "1-s0.log"
    own.parent.mkdir(parents=True)
    own.write_text("epoch 1/1: loss 2.3\n")
    lane_log = study.root / "jobs" / "L0001" / "local" / f"{lane['pid']}_0_log.out"
    lane_log.parent.mkdir(parents=True)
    lane_log.write_text("submitit INFO starting\n")
    assert cell_logs(study, "digits/1-s0") == CellLogs(
        ["attempt 1: out of memory\n"], own, lane_log
    )
    assert cell_logs(study, "digits/2-s1") == CellLogs([], None, None)
    with pytest.raises(ValueError, match="not in .*study.toml"):
        cell_logs(study, "mnist/1-s0")
    with pytest.raises(ValueError, match="not a cell of the study: architectures 0..2, seeds 0..1"):
        cell_logs(study, "digits/3-s0")


def test_status_shows_how_killed_tasks_ended_from_one_sacct_call(
    study, record, monkeypatch
) -> None:
    # Five one-cell tasks of digits-0 ended in five ways; task 5 is not in accounting yet.
    write_record(
        study,
        "L0001",
        "slurm",
        [
            ArrayRecord.from_dict(
                {
                    "label": "digits-0",
                    "dataset": "digits",
                    "job_name": job_name(study, "L0001", "digits-0"),
                    "job_id": "100",
                    "tasks": [
                        {"chunk": f"digits-0.{i}", "cells": [[i % 3, i // 3]]} for i in range(6)
                    ],
                }
            )
        ],
    )
    record(study, "digits", 2, 0, "done")  # task 2 finished its cell before it was preempted
    log = study.layout.submitit_dir("L0001", "slurm") / "100_0_0_log.out"
    log.parent.mkdir(parents=True)
    log.write_text("srun: error: task 0: Killed\n")
    name = job_name(study, "L0001", "digits-0")
    ends = ["FAILED|1:0", "TIMEOUT|0:0", "PREEMPTED|0:0", "OUT_OF_MEMORY|0:125", "NODE_FAIL|0:9"]
    rows = "".join(f"100_{i}|{name}|{end}\n" for i, end in enumerate(ends)) + "7|other|FAILED|1:0\n"
    calls = []

    queue = f"100_5|{name}|PENDING\n"

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, queue if argv[0] == "squeue" else rows, "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    status = study_status(study)
    # Task 5 was submitted and accounting does not list it yet: the queue is asked once more.
    assert [argv[0] for argv in calls] == ["sacct", "squeue"]
    assert name in calls[0][calls[0].index("--name") + 1]
    assert status.counts["digits"]["queued"] == 1  # task 5, pending in the queue
    assert status.stopped == [
        {
            "task": "100_0",
            "state": "FAILED",
            "reason": "exit 1",
            "log": str(log),
            "cells": ["digits/0-s0"],
        },
        {"task": "100_1", "state": "TIMEOUT", "reason": "", "log": "", "cells": ["digits/1-s0"]},
        {
            "task": "100_3",
            "state": "OUT_OF_MEMORY",
            "reason": "ExitCode 0:125",
            "log": "",
            "cells": ["digits/0-s1"],
        },
        {
            "task": "100_4",
            "state": "NODE_FAIL",
            "reason": "signal 9",
            "log": "",
            "cells": ["digits/1-s1"],
        },
    ]
    text = format_status(status)
    assert "tasks that ended before their cells did (4):" in text
    assert f"  100_0 FAILED (exit 1): 1 cell(s) unfinished: digits/0-s0; log {log}" in text
    assert "  100_1 TIMEOUT: 1 cell(s) unfinished: digits/1-s0; no log" in text


def test_a_task_accounting_never_saw_of_an_old_launch_has_ended(study, monkeypatch) -> None:
    _slurm_record(study, "L0001", arrays=1, tasks_per_array=2)
    path = study.layout.record_file("L0001")
    record = json.loads(path.read_text())
    record["created_ts"] -= 2 * 3600  # older than accounting's lag, and purged since
    path.write_text(json.dumps(record))
    monkeypatch.setattr(
        subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, "", "")
    )
    found = tasks(study, report=True)
    assert [(t.job_id, t.state, t.end) for t in found] == [
        ("100_0", "ended", ""),
        ("100_1", "ended", ""),
    ]
    assert study_status(study).stopped[0]["state"] == "ended"


def test_without_accounting_status_falls_back_to_squeue(study, monkeypatch) -> None:
    _slurm_record(study, "L0001", arrays=1, tasks_per_array=2)
    name = job_name(study, "L0001", "digits-0")

    def fake_run(argv, **kwargs):
        if argv[0] == "sacct":
            return subprocess.CompletedProcess(argv, 1, "", "Slurm accounting storage is disabled")
        return subprocess.CompletedProcess(argv, 0, f"100_1|{name}|RUNNING\n", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    found = tasks(study, report=True)
    assert [(t.job_id, t.state) for t in found] == [("100_0", "ended"), ("100_1", "running")]
