"""The study verbs of `anysweep`: init from presets, one clear error and no side effects for
a malformed study.toml, a whole study run locally, grown, and run again, and failed cells
run again on demand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.schema import read_results
from hpc.cli import main
from hpc.procfs import process_alive
from hpc.scheduling.launch import cancel, launch
from hpc.scheduling.records import read_records as read_launch_records
from hpc.scheduling.run import run_study
from hpc.scheduling.status import study_status
from hpc.study import packs
from hpc.study.datasets import prepare_datasets
from hpc.study.population import sample_architectures
from hpc.study.presets import PRESETS_DIR
from hpc.study.spec import Study, load_study


def read_records(study) -> list:
    """The study's launch records."""
    return read_launch_records(study)


def _cells(record) -> list[list[int]]:
    """The cells a launch record's tasks run, in order."""
    return [list(c) for a in record.arrays for t in a.tasks for c in t.cells]


STUDY = """\
[study]
architectures = 2
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

[datasets.digits]
"""


def _records(study: Study, arch_id: int, seed: int = 0) -> list:
    return packs.cell_records(study.layout, "digits", arch_id, seed)


def _prepared(folder: Path, toml: str) -> Study:
    """A study written to `folder`, its architectures sampled and its data prepared."""
    (folder / "study.toml").write_text(toml)
    study = load_study(folder)
    sample_architectures(study)
    prepare_datasets(study, progress=False)
    return study


def _lane_ends(study: Study, timeout_s: float = 30) -> bool:
    """Whether the first launch's worker process ends within `timeout_s`."""
    lane = read_records(study)[0].to_dict()["lanes"][0]
    deadline = time.monotonic() + timeout_s
    while process_alive(lane["pid"], lane["start"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not process_alive(lane["pid"], lane["start"])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_init_writes_the_commented_preset(tmp_path: Path, capsys) -> None:
    assert main(["init", str(tmp_path / "s"), "--preset", "paper"]) == 0
    written = (tmp_path / "s" / "study.toml").read_text()
    assert written == (PRESETS_DIR / "paper.toml").read_text()
    assert written.count("\n#") > 10
    out = capsys.readouterr().out
    assert "wrote" in out
    # The next step for either kind of machine: run here, or launch (Slurm's default).
    assert f"`anysweep run {tmp_path / 's'}` to run it on this machine" in out
    assert f"`anysweep launch {tmp_path / 's'} --dry-run`" in out and "Slurm" in out


def test_init_refuses_to_overwrite_a_study(tmp_path: Path, capsys) -> None:
    (tmp_path / "study.toml").write_text(STUDY)
    assert main(["init", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "study.toml").read_text() == STUDY


def test_init_names_the_presets_for_an_unknown_one(tmp_path: Path, capsys) -> None:
    assert main(["init", str(tmp_path), "--preset", "huge"]) == 2
    assert capsys.readouterr().err.strip() == (
        "anysweep init: error: unknown preset 'huge'; presets: demo, paper"
    )
    assert _files(tmp_path) == []


MALFORMED = {
    "unknown key": (
        STUDY.replace("seeds = 1", "seeds = 1\nepochs = 3"),
        "study.toml:4: unknown key 'epochs' in [study]",
    ),
    "wrong type": (
        STUDY.replace("seeds = 1", "seeds = [0, 1]"),
        "study.toml:3: seeds must be an integer, got list [0, 1]",
    ),
    "unknown dataset": (
        STUDY.replace("[datasets.digits]", "[datasets.svhn]"),
        "study.toml:17: unknown dataset 'svhn'",
    ),
    "impossible constraints": (
        STUDY.replace("num_classes = 10", "num_classes = 10\nflops = [5e8, 6e8]"),
        "study.toml:12: flops = [500,000,000, 600,000,000] is impossible",
    ),
}


@pytest.mark.parametrize(
    "verb",
    [["sample"], ["launch", "--dry-run"], ["launch", "--cluster", "local"], ["status"], ["run"]],
)
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_study_gives_one_error_and_changes_nothing(
    tmp_path: Path, capsys, verb, case
) -> None:
    text, expected = MALFORMED[case]
    (tmp_path / "study.toml").write_text(text)
    assert main([verb[0], str(tmp_path), *verb[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"anysweep {verb[0]}: error: {tmp_path / expected}")
    assert _files(tmp_path) == ["study.toml"]


def test_launch_asks_for_prepared_data_before_submitting(tmp_path: Path, capsys) -> None:
    (tmp_path / "study.toml").write_text(STUDY)
    assert main(["launch", str(tmp_path), "--cluster", "local"]) == 2
    assert "datasets not prepared yet: digits; run `anysweep prepare" in capsys.readouterr().err
    assert read_records(load_study(tmp_path)) == []


def _mtimes(folder: Path) -> dict[str, float]:
    """When each cell's record in the dataset's packs was written, by its stem."""
    found = {}
    for pack in folder.glob("*.pack"):
        for s in packs.stored(pack):
            found[f"{s.result.arch_id}-s{s.result.seed}"] = s.written
    return found


def test_run_interrupted_continues_and_a_grown_study_trains_only_its_new_cells(
    tmp_path: Path,
) -> None:
    # Four epochs keep each cell long enough that the interrupt lands before the last one ends.
    grown = STUDY.replace("architectures = 2", "architectures = 3").replace(
        "epochs = 1", "epochs = 4"
    )
    assert grown.count("epochs = 4") == 1
    (tmp_path / "study.toml").write_text(grown)
    results = tmp_path / "results" / "digits"
    # Ctrl-C as a terminal sends it: SIGINT to the command and the workers it started.
    run = subprocess.Popen(
        [sys.executable, "-m", "hpc.cli", "run", str(tmp_path), "--jobs", "1", "--no-analyze"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _mtimes(results):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert "run the same command again to continue" in err
    # One clean line: the workers' controllers run in a session of their own, so no
    # KeyboardInterrupt traceback of theirs reaches the terminal.
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    first = _mtimes(results)
    assert 1 <= len(first) < 3

    assert run_study(tmp_path, jobs=2, progress=False, analyze=False) == 0
    records = read_records(load_study(tmp_path))
    resumed = _cells(records[-1])
    assert sorted(resumed) == [[a, 0] for a in range(3) if f"{a}-s0" not in first]
    assert {k: v for k, v in _mtimes(results).items() if k in first} == first
    assert sorted(read_results(tmp_path / "results.h5").datasets["digits"].columns["arch_id"]) == [
        0,
        1,
        2,
    ]

    # Run again: nothing to launch. One more architecture: only its cell trains.
    assert run_study(tmp_path, jobs=2, progress=False, analyze=False) == 0
    assert len(read_records(load_study(tmp_path))) == len(records)
    before = _mtimes(results)
    # The same recipe (another would make the trained cells stale: see test_stale.py).
    (tmp_path / "study.toml").write_text(grown.replace("architectures = 3", "architectures = 4"))
    assert run_study(tmp_path, jobs=2, progress=False, analyze=False) == 0
    records = read_records(load_study(tmp_path))
    assert _cells(records[-1]) == [[3, 0]]
    after = _mtimes(results)
    assert {k: after[k] for k in before} == before
    assert sorted(after) == ["0-s0", "1-s0", "2-s0", "3-s0"]
    assert study_status(load_study(tmp_path)).counts["digits"]["done"] == 4


def test_cancel_stops_the_local_workers_and_their_cells_are_missing_again(
    tmp_path: Path, capsys
) -> None:
    study = _prepared(tmp_path, STUDY.replace("epochs = 1", "epochs = 50"))
    launched = launch(study, cluster="local", jobs=1)
    assert launched.job_ids and main(["status", str(tmp_path)]) == 0
    row = [
        line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("digits")
    ]
    done, running, queued = (int(v) for v in row[0][1:4])
    assert (done, running + queued) == (0, 2)
    assert cancel(study) == list(launched.job_ids)
    assert _lane_ends(study)
    assert study_status(study).counts["digits"]["missing"] == 2


def test_launch_reset_retries_runs_failed_cells_that_used_up_their_attempts(
    tmp_path: Path, capsys
) -> None:
    study = _prepared(tmp_path, STUDY.replace("seeds = 1", "seeds = 1\nmax_attempts = 1"))
    # A directory where cell 0-s0's checkpoint goes: its first epoch-end save fails.
    blocker = tmp_path / "checkpoints" / "digits" / "0-s0.pt"
    (blocker / "x").parent.mkdir(parents=True)
    (blocker / "x").touch()
    for job in launch(study, cluster="local", jobs=1).jobs:
        job.result()
    [failed] = [r.result for r in _records(study, 0)]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "IsADirectoryError" in failed.error

    shutil.rmtree(blocker)
    assert main(["launch", str(tmp_path), "--cluster", "local"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert main(["launch", str(tmp_path), "--cluster", "local", "--reset-retries"]) == 0
    assert "started 1 local workers" in capsys.readouterr().out
    deadline = time.monotonic() + 120
    while study_status(study).tasks_active and time.monotonic() < deadline:
        time.sleep(0.2)
    [again] = [r.result for r in _records(study, 0)]
    assert (again.status, again.attempts) == ("done", 1)
    records = read_records(study)
    assert _cells(records[-1]) == [[0, 0]]
    kept = list((tmp_path / "jobs" / "reset").glob("*/digits.pack"))
    assert len(kept) == 1
    assert [s.result.error for s in packs.stored(kept[0])] == [failed.error]


def test_run_that_fails_while_waiting_stops_its_local_workers(tmp_path: Path, monkeypatch) -> None:
    import hpc.scheduling.status

    (tmp_path / "study.toml").write_text(STUDY.replace("epochs = 1", "epochs = 50"))
    looks = []

    def failing_tasks(study):
        looks.append(1)
        if len(looks) == 2:
            raise OSError("the study folder went away")
        return real(study)

    real = hpc.scheduling.status.tasks
    monkeypatch.setattr(hpc.scheduling.status, "tasks", failing_tasks)
    with pytest.raises(OSError, match="went away"):
        run_study(tmp_path, jobs=1, progress=False, analyze=False, poll_s=0.2)
    assert _lane_ends(load_study(tmp_path))


def test_run_right_after_cancel_runs_the_cells_the_cancelled_workers_left(tmp_path: Path) -> None:
    # Cancelled workers look active for a moment (submitit gives them 1 s): the run's first
    # launch submits nothing, and it must look again rather than give up.
    study = _prepared(tmp_path, STUDY.replace("epochs = 1", "epochs = 4"))
    launched = launch(study, cluster="local", jobs=1)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "logs").rglob("*.log")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancel(study) == list(launched.job_ids)
    assert run_study(tmp_path, jobs=1, progress=False, analyze=False, poll_s=0.2) == 0
    assert study_status(study).counts["digits"]["done"] == 2
    assert len(read_records(study)) == 2


def test_a_ctrl_c_that_library_code_swallows_still_stops_the_run(
    tmp_path: Path, monkeypatch
) -> None:
    import hpc.study.results

    (tmp_path / "study.toml").write_text(STUDY.replace("epochs = 1", "epochs = 50"))
    real = hpc.study.results.standing
    looks = []

    def swallowing_scan(study, population=None):
        looks.append(1)
        if len(looks) == 3:
            try:  # as h5py's weak-reference callbacks do: "Exception ignored", and on
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
            except KeyboardInterrupt:
                pass
        return real(study, population)

    monkeypatch.setattr(hpc.study.results, "standing", swallowing_scan)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run_study(tmp_path, jobs=1, progress=False, analyze=False, poll_s=0.2)
    assert signal.getsignal(signal.SIGINT) is before
    assert _lane_ends(load_study(tmp_path))
