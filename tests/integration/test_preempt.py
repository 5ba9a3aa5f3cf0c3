"""Killed, signalled and requeued workers lose no training and duplicate none: every cell ends
with exactly one result, equal to the result of an uninterrupted run (digits at 8 px, CPU)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import submitit

from anynet.arch import Architecture
from hpc.scheduling.manifest import write_manifest
from hpc.study.layout import StudyLayout, cell_paths
from hpc.study.packs import cell_records, stored
from hpc.study.recipe import Recipe
from hpc.worker import Chunk, run_chunk
from loaders.prepare import prepare
from loaders.registry import get_dataset

ROOT = Path(__file__).resolve().parents[2]
SPEC = get_dataset("digits", resolution=8)
RECIPE = Recipe(epochs=3, batch_size=64, base_lr=1.0, test_batch_size=512)
SMALL = Architecture(
    depths=(1, 1),
    widths=(8, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)
WIDER = Architecture(
    depths=(1, 1),
    widths=(16, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)
CELLS = [(0, 0, SMALL), (1, 0, WIDER), (0, 1, SMALL)]
INTERRUPTED = (1, 0)  # the cell stopped in its second epoch


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    prepare(SPEC, path, progress=False)
    return path


@pytest.fixture(scope="module", params=[1, 2], ids=["solo", "cohorts-of-2"])
def cohort(request) -> int:
    """Every test runs with cells alone and with the chunk's seed-0 cells in one cohort."""
    return request.param


def _study(root: Path, data_dir: Path, cohort: int) -> Path:
    shutil.copytree(data_dir, root / "data")
    write_manifest(
        root / "jobs" / "0.json",
        study_dir=root,
        dataset=SPEC,
        recipe=RECIPE,
        cells=CELLS,
        max_attempts=3,
        device="cpu",
        threads=1,
        cohort=cohort,
    )
    return root / "jobs" / "0.json"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The chunk's results without interruption (cells alone), keyed by (arch_id, seed)."""
    manifest = _study(tmp_path_factory.mktemp("reference"), data_dir, 1)
    return {(r.arch_id, r.seed): r for r in run_chunk(manifest)}


def _in_second_epoch(study: Path) -> bool:
    """Whether the interrupted cell has finished its first epoch (so it is in its second)."""
    log = cell_paths(study, "digits", *INTERRUPTED).log
    return log.exists() and "epoch 1/3:" in log.read_text()


def _signal_in_second_epoch(
    signals: dict[Path, Callable[[], None]], alive, timeout_s=120.0
) -> None:
    """Call each study's signal as soon as its interrupted cell is in its second epoch."""
    waiting = dict(signals)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for study in [s for s in waiting if _in_second_epoch(s)]:
            waiting.pop(study)()
        if waiting and not alive():
            pytest.fail("a worker ended before the cell to interrupt began")
        time.sleep(0.02)
    if waiting:
        pytest.fail(
            f"no first epoch of the interrupted cell in {sorted(waiting)} after {timeout_s} s"
        )


def _log(study: Path, key: tuple[int, int]) -> str:
    """A cell's whole log: its records' logs, then the log of a run in progress."""
    live = cell_paths(study, "digits", *key).log
    text = "".join(r.log for r in cell_records(StudyLayout.at(study), "digits", *key))
    return text + (live.read_text() if live.exists() else "")


def _assert_every_cell_once_with_reference_numbers(study: Path, reference) -> None:
    folder = study / "results" / "digits"
    [pack] = folder.iterdir()  # one pack, no temporaries
    assert sorted((s.result.arch_id, s.result.seed) for s in stored(pack)) == sorted(reference)
    for key, expected in reference.items():
        [record] = cell_records(StudyLayout.at(study), "digits", *key)  # nothing twice
        cell = record.result
        assert (cell.status, cell.attempts, cell.epochs) == ("done", 1, 3)
        assert (cell.top1_err, cell.top5_err, cell.best_top1_err) == (
            expected.top1_err,
            expected.top5_err,
            expected.best_top1_err,
        )
        for curve in ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err"):
            assert cell.curves[curve].tolist() == expected.curves[curve].tolist(), curve


def _worker_env() -> dict[str, str]:
    # Outside Slurm: the worker must not try to requeue itself.
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def test_worker_killed_mid_cell_resumes_from_its_last_checkpoint(
    tmp_path, data_dir, reference, cohort
):
    manifest = _study(tmp_path, data_dir, cohort)
    with (tmp_path / "worker.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpc.worker", str(manifest)],
            cwd=ROOT,
            env=_worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            _signal_in_second_epoch(
                {tmp_path: lambda: proc.send_signal(signal.SIGKILL)}, lambda: proc.poll() is None
            )
        finally:
            proc.kill()
            proc.wait()
    paths = cell_paths(tmp_path, "digits", *INTERRUPTED)
    assert paths.checkpoint.exists()
    assert not cell_records(StudyLayout.at(tmp_path), "digits", *INTERRUPTED)
    run_chunk(manifest)
    assert "resumed after epoch" in _log(tmp_path, INTERRUPTED)
    _assert_every_cell_once_with_reference_numbers(tmp_path, reference)


@pytest.fixture(scope="module")
def preempted(slurm_cluster, tmp_path_factory, data_dir, cohort):
    """Both Slurm routes at once (two CPUs, half the waiting), each sent USR2 in the second
    epoch of its second cell: a submitit Chunk and an sbatch array task of `python -m
    hpc.worker --array`. Returns {route: (study, job, final state)}."""
    root = tmp_path_factory.mktemp("preempted")
    submitit_study, sbatch_study = root / "submitit-study", root / "sbatch-study"
    manifest = _study(submitit_study, data_dir, cohort)
    executor = submitit.AutoExecutor(root / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=10, slurm_partition="debug", cpus_per_task=1)
    job = executor.submit(Chunk(manifest))
    _study(sbatch_study, data_dir, cohort)
    array_job = (
        slurm_cluster.client(
            "sbatch",
            "--parsable",
            "--requeue",
            "--array=0",
            "--time=10",
            "--signal=B:USR2@60",
            "--cpus-per-task=1",
            f"--chdir={ROOT}",
            f"--output={root}/slurm-%A_%a.out",
            f"--wrap=exec {sys.executable} -m hpc.worker --array {sbatch_study / 'jobs'}",
        ).strip()
        + "_0"
    )
    _signal_in_second_epoch(
        {
            submitit_study: lambda: slurm_cluster.client("scancel", "--signal=USR2", job.job_id),
            # B: in sbatch's --signal, --batch here: the signal goes to the batch step, which
            # exec made the worker itself.
            sbatch_study: lambda: slurm_cluster.client(
                "scancel", "--batch", "--signal=USR2", array_job
            ),
        },
        alive=lambda: not job.done(),
    )
    return {
        "submitit": (submitit_study, job, slurm_cluster.wait(job.job_id, timeout_s=150)),
        "sbatch": (sbatch_study, array_job, slurm_cluster.wait(array_job, timeout_s=150)),
    }


@pytest.mark.slurm
def test_preempted_submitit_chunk_requeues_and_finishes_with_the_same_numbers(preempted, reference):
    study, job, state = preempted["submitit"]
    assert state == "COMPLETED"
    assert [r.status for r in job.result()] == ["done"] * 3
    log = _log(study, INTERRUPTED)
    # The flag handler stops the chunk at the next step; submitit's handler then requeues it.
    assert "interrupted: stopped in epoch" in log and "resumed after epoch" in log
    assert log.count("attempt 1/3") == 2  # a preemption is no failed attempt
    _assert_every_cell_once_with_reference_numbers(study, reference)


@pytest.mark.slurm
def test_signalled_sbatch_array_task_requeues_itself_and_finishes_with_the_same_numbers(
    preempted, reference
):
    study, _, state = preempted["sbatch"]
    assert state == "COMPLETED"
    log = _log(study, INTERRUPTED)
    assert "interrupted: stopped in epoch" in log and "resumed after epoch" in log
    assert log.count("attempt 1/3") == 2
    _assert_every_cell_once_with_reference_numbers(study, reference)
