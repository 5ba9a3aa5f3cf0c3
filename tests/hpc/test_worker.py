"""The chunk worker on real data (digits at 8 px): records in the task's pack, logs, skips,
failures, retries."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket

import pytest
import torch

import hpc.worker.cell as cell_module
import hpc.worker.chunk as worker
from analysis.schema import read_cell, write_cell
from anynet.arch import Architecture
from anynet.complexity import complexity
from hpc.scheduling.manifest import ArrayTask, read_manifest, write_array_manifest, write_manifest
from hpc.study import packs
from hpc.study.layout import StudyLayout, cell_paths
from hpc.study.recipe import Recipe
from hpc.worker import main, run_chunk
from hpc.worker.train import CellInterrupted
from loaders.prepare import prepare
from loaders.registry import get_dataset

SPEC = get_dataset("digits", resolution=8)
RECIPE = Recipe(epochs=2, batch_size=64, base_lr=1.0, test_batch_size=512)
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
# Group width 3 does not divide the bottleneck width 8: Architecture refuses it.
UNBUILDABLE = {**SMALL.to_dict(), "group_widths": [3, 8]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    prepare(SPEC, path, progress=False)
    return path


@pytest.fixture
def study(tmp_path, data_dir):
    shutil.copytree(data_dir, tmp_path / "data")
    return tmp_path


def _manifest(study, cells, recipe=RECIPE, max_attempts=3, name="0.json"):
    path = study / "jobs" / name
    write_manifest(
        path,
        study_dir=study,
        dataset=SPEC,
        recipe=recipe,
        cells=cells,
        max_attempts=max_attempts,
        device="cpu",
        threads=1,
    )
    return path


def _with_arch_dict(path, index, arch):
    """Replace one cell's architecture in a written manifest (as a stale manifest would hold)."""
    data = json.loads(path.read_text())
    data["cells"][index]["arch"] = arch
    path.write_text(json.dumps(data))


def _records(study, arch_id, seed=0):
    return packs.cell_records(StudyLayout.at(study), "digits", arch_id, seed)


def _log(study, arch_id, seed=0):
    """The cell's whole log: its records' logs, then the log of a run in progress."""
    live = cell_paths(study, "digits", arch_id, seed).log
    text = "".join(r.log for r in _records(study, arch_id, seed))
    return text + (live.read_text() if live.exists() else "")


def _attempt_lines(study, arch_id, seed=0):
    return _log(study, arch_id, seed).count(" attempt ")


def test_chunk_appends_one_record_per_cell_with_provenance_to_its_pack(study):
    results = run_chunk(_manifest(study, [(0, 0, SMALL), (1, 0, WIDER)]))
    files = sorted((study / "results" / "digits").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pack"
    assert [(s.result.arch_id, s.result.seed) for s in packs.stored(files[0])] == [(0, 0), (1, 0)]
    for arch_id, arch in ((0, SMALL), (1, WIDER)):
        [record] = _records(study, arch_id)
        cell = record.result
        assert (cell.dataset, cell.arch_id, cell.seed, cell.status, cell.attempts) == (
            "digits",
            arch_id,
            0,
            "done",
            1,
        )
        assert cell.epochs == 2 and len(cell.curves["test_top1_err"]) == 2
        assert 0 < cell.top1_err < 90
        counts = complexity(arch, resolution=8, num_classes=10)
        assert (cell.flops, cell.params, cell.acts) == (counts.flops, counts.params, counts.acts)
        assert json.loads(cell.recipe) == RECIPE.to_dict()
        assert json.loads(cell.versions)["torch"] == torch.__version__
        assert (cell.host, cell.gpu, cell.job_id) == (socket.gethostname(), "cpu", "")
        assert cell.started <= cell.finished
        assert json.loads(cell.spec) == SPEC.to_dict() and len(cell.fingerprint) == 16
    assert [r.top1_err for r in results] == [_records(study, a)[0].result.top1_err for a in (0, 1)]


def test_finished_cell_keeps_its_log_in_its_record_and_leaves_no_file(study):
    run_chunk(_manifest(study, [(0, 0, SMALL)]))
    paths = cell_paths(study, "digits", 0, 0)
    [record] = _records(study, 0)
    assert "cell digits/0-s0 attempt 1/3" in record.log
    assert "epoch 1/2: loss" in record.log and "epoch 2/2: loss" in record.log
    assert not paths.checkpoint.exists() and not paths.log.exists()


def test_second_run_skips_finished_cells(study):
    manifest = _manifest(study, [(0, 0, SMALL)])
    first = run_chunk(manifest)
    again = run_chunk(manifest)
    assert (again[0].finished, again[0].top1_err) == (first[0].finished, first[0].top1_err)
    assert _attempt_lines(study, 0) == 1


def test_loaders_are_built_once_for_all_cells_of_a_chunk(study, monkeypatch):
    import loaders.pipelines

    calls = []
    real = loaders.pipelines.build_loaders
    monkeypatch.setattr(
        loaders.pipelines, "build_loaders", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    run_chunk(
        _manifest(
            study, [(0, 0, SMALL), (0, 1, SMALL), (1, 0, WIDER)], Recipe(epochs=1, batch_size=64)
        )
    )
    assert len(calls) == 1


def test_failing_cell_is_recorded_with_its_traceback_and_the_chunk_goes_on(study):
    manifest = _manifest(study, [(0, 0, SMALL), (1, 0, WIDER)])
    _with_arch_dict(manifest, 0, UNBUILDABLE)
    results = run_chunk(manifest)
    assert [r.status for r in results] == ["failed", "done"]
    [record] = _records(study, 0)
    failed = record.result
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error.startswith("Traceback (most recent call last):")
    assert "ValueError" in failed.error and "group" in failed.error
    assert failed.error in record.log


def test_failed_cell_is_retried_until_max_attempts(study):
    manifest = _manifest(study, [(0, 0, SMALL)], max_attempts=2)
    _with_arch_dict(manifest, 0, UNBUILDABLE)
    attempts = [run_chunk(manifest)[0].attempts for _ in range(3)]
    assert attempts == [1, 2, 2]
    assert _attempt_lines(study, 0) == 2  # the third run left the cell alone


def test_retry_of_a_failed_cell_can_succeed(study):
    manifest = _manifest(study, [(0, 0, SMALL)])
    _with_arch_dict(manifest, 0, UNBUILDABLE)
    assert run_chunk(manifest)[0].status == "failed"
    _with_arch_dict(manifest, 0, SMALL.to_dict())
    retried = run_chunk(manifest)[0]
    assert (retried.status, retried.attempts, retried.error) == ("done", 2, "")


def test_diverged_cell_is_final_and_not_retried(study):
    manifest = _manifest(study, [(0, 0, SMALL)], Recipe(epochs=2, batch_size=64, base_lr=1e8))
    first = run_chunk(manifest)[0]
    assert (first.status, first.diverged_epoch, first.epochs) == ("diverged", 0, 0)
    assert run_chunk(manifest)[0].finished == first.finished
    assert _attempt_lines(study, 0) == 1
    assert not cell_paths(study, "digits", 0, 0).checkpoint.exists()


def test_stopped_chunk_keeps_the_checkpoint_and_resumes_to_the_same_numbers(
    study, tmp_path_factory, data_dir
):
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(data_dir, reference / "data")
    expected = run_chunk(_manifest(reference, [(0, 0, SMALL)]))[0]
    manifest = _manifest(study, [(0, 0, SMALL)])
    polls = []
    with pytest.raises(CellInterrupted):
        run_chunk(manifest, stop_flag=lambda: polls.append(1) or len(polls) == 30)
    paths = cell_paths(study, "digits", 0, 0)
    assert paths.checkpoint.exists() and not _records(study, 0)
    resumed = run_chunk(manifest)[0]
    assert "resumed after epoch 1/2" in _log(study, 0)
    assert resumed.curves["test_top1_err"].tolist() == expected.curves["test_top1_err"].tolist()
    assert resumed.curves["train_loss"].tolist() == expected.curves["train_loss"].tolist()


def test_a_signal_inside_torch_save_stops_the_cell_and_keeps_its_attempt(study, monkeypatch):
    # Ctrl-C (or a scheduler's SIGINT) landing inside torch.save makes torch's zip writer
    # raise RuntimeError on top of the KeyboardInterrupt: still a stop, not a failure.
    import hpc.worker.train

    class Interrupting(io.BytesIO):
        def write(self, data):
            if self.tell() > 1000:
                raise KeyboardInterrupt
            return super().write(data)

    def interrupted_save(path, payload):
        torch.save(payload, Interrupting())

    manifest = _manifest(study, [(0, 0, SMALL)])
    monkeypatch.setattr(hpc.worker.train, "save_checkpoint", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run_chunk(manifest)
    paths = cell_paths(study, "digits", 0, 0)
    assert not _records(study, 0)
    assert "stopped (KeyboardInterrupt)" in paths.log.read_text()
    monkeypatch.undo()
    again = run_chunk(manifest)[0]
    assert (again.status, again.attempts) == ("done", 1)


def test_a_requeue_submitit_gives_up_on_leaves_the_cell_unfinished_not_failed(study, monkeypatch):
    # On USR2 past its time-out count submitit raises UncompletedJobError from inside the
    # running step: the job ends, and the cell is for the next launch, with its attempts.
    from submitit.core.utils import UncompletedJobError

    import hpc.worker.train

    def gives_up(path, payload):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    manifest = _manifest(study, [(0, 0, SMALL), (1, 0, WIDER)])
    monkeypatch.setattr(hpc.worker.train, "save_checkpoint", gives_up)
    with pytest.raises(UncompletedJobError):
        run_chunk(manifest)
    paths = cell_paths(study, "digits", 0, 0)
    assert not _records(study, 0) and not cell_paths(study, "digits", 1, 0).log.exists()
    assert "stopped (UncompletedJobError)" in paths.log.read_text()


def test_a_finished_cell_whose_file_is_locked_is_never_retrained(study, monkeypatch):
    # A study from before packs: the cell's result is a file of its own.
    import fcntl
    import threading

    manifest = _manifest(study, [(0, 0, SMALL)], Recipe(epochs=1, batch_size=64))
    first = _legacy(study, run_chunk(manifest)[0])
    path = cell_paths(study, "digits", 0, 0).legacy_result
    monkeypatch.setattr(cell_module, "PREVIOUS_RETRY_S", 0.2)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    # Released after a few tries: the worker reads the result and skips the cell.
    threading.Timer(0.5, os.close, (fd,)).start()
    again = run_chunk(manifest)[0]
    assert (again.status, again.finished) == ("done", first.finished)
    assert _attempt_lines(study, 0) == 0  # not run again (its log went with the old record)
    # Held for good: the chunk stops with the error instead of training the cell again.
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BlockingIOError):
            run_chunk(manifest)
    finally:
        os.close(fd)
    assert _attempt_lines(study, 0) == 0 and read_cell(path).finished == first.finished


def _legacy(study, result):
    """Turn a cell's record into a one-cell result file, as studies before packs hold it."""
    for pack in (study / "results" / "digits").glob("*.pack"):
        pack.unlink()
    write_cell(cell_paths(study, "digits", result.arch_id, result.seed).legacy_result, result)
    return result


def test_a_study_from_before_packs_skips_cells_its_result_files_finished(study):
    manifest = _manifest(study, [(0, 0, SMALL)], Recipe(epochs=1, batch_size=64))
    first = _legacy(study, run_chunk(manifest)[0])
    again = run_chunk(manifest)[0]
    assert (again.status, again.finished) == ("done", first.finished)
    assert not list((study / "results" / "digits").glob("*.pack"))


def test_array_task_runs_the_manifest_named_by_its_task_id(study, capsys):
    # Launches before array manifests: a folder of one manifest per task.
    _manifest(study, [(0, 0, SMALL)], Recipe(epochs=1, batch_size=64), name="0.json")
    _manifest(study, [(1, 0, WIDER)], Recipe(epochs=1, batch_size=64), name="1.json")
    assert main(["--array", str(study / "jobs"), "--task-id", "1"]) == worker.EXIT_DONE
    assert [(r.result.arch_id, r.result.seed) for r in _records(study, 1)] == [(1, 0)]
    assert not _records(study, 0)
    assert "1 done, 0 diverged, 0 failed" in capsys.readouterr().err


def _array_manifest(study, tasks):
    path = study / "jobs" / "L0001" / "digits-0.json"
    write_array_manifest(
        path,
        study_dir=study,
        dataset=SPEC,
        recipe=Recipe(epochs=1, batch_size=64),
        archs={0: SMALL, 1: WIDER},
        tasks=[ArrayTask(f"L0001.digits-0.{i}", cells) for i, cells in enumerate(tasks)],
        device="cpu",
    )
    return path


def test_array_task_runs_its_task_of_the_arrays_manifest_into_its_own_pack(study, capsys):
    path = _array_manifest(study, [[(0, 0, 0)], [(1, 0, 0), (0, 1, 0)]])
    assert main(["--array", str(path), "--task-id", "1"]) == worker.EXIT_DONE
    pack = study / "results" / "digits" / "L0001.digits-0.1.pack"
    assert [(s.result.arch_id, s.result.seed) for s in packs.stored(pack)] == [(1, 0), (0, 1)]
    assert "2 done, 0 diverged, 0 failed" in capsys.readouterr().err
    assert read_manifest(path, 0).cells[0].arch == SMALL.to_dict()
    with pytest.raises(ValueError, match="no task 2; the array has tasks 0..1"):
        read_manifest(path, 2)
    with pytest.raises(ValueError, match="an array's manifest: give a task id"):
        read_manifest(path)


def test_attempts_made_before_the_launch_count_toward_the_limit(study):
    manifest = _array_manifest(study, [[(0, 0, 2)]])
    data = json.loads(manifest.read_text())
    data["archs"]["0"] = UNBUILDABLE
    data["max_attempts"] = 3
    manifest.write_text(json.dumps(data))
    assert [r.attempts for r in run_chunk(manifest, task=0)] == [3]
    assert run_chunk(manifest, task=0)[0].attempts == 3  # the limit: not run again
    assert _attempt_lines(study, 0) == 1


def test_worker_exits_1_when_a_cell_failed(study):
    manifest = _manifest(study, [(0, 0, SMALL)], Recipe(epochs=1, batch_size=64))
    _with_arch_dict(manifest, 0, UNBUILDABLE)
    assert main([str(manifest)]) == worker.EXIT_SOME_FAILED


def test_missing_manifest_exits_2_naming_it(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == worker.EXIT_BAD_INPUT
    assert f"manifest {tmp_path / 'nope.json'} does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda_exits_2_before_any_cell(study, capsys):
    path = study / "jobs" / "0.json"
    write_manifest(
        path,
        study_dir=study,
        dataset=SPEC,
        recipe=RECIPE,
        cells=[(0, 0, SMALL)],
        max_attempts=3,
        device="cuda",
        threads=1,
    )
    assert main([str(path)]) == worker.EXIT_BAD_INPUT
    assert "device 'cuda' was asked for but torch sees no CUDA device" in capsys.readouterr().err
    assert not cell_paths(study, "digits", 0, 0).log.exists()


def test_an_error_while_writing_results_is_no_bad_input(study, monkeypatch):
    def broken(path, entries, sync=True):
        raise ValueError("the pack refused a record")

    monkeypatch.setattr(cell_module.packs, "append", broken)
    with pytest.raises(ValueError, match="the pack refused"):
        main([str(_manifest(study, [(0, 0, SMALL)], Recipe(epochs=1, batch_size=64)))])


def test_manifest_round_trips_through_write_and_read(study):
    path = _manifest(study, [(3, 1, SMALL), (4, 0, WIDER)])
    manifest = read_manifest(path)
    assert manifest.study_dir == study.resolve()
    assert manifest.dataset_name == "digits" and manifest.recipe == RECIPE
    assert [(c.arch_id, c.seed, Architecture.from_dict(c.arch)) for c in manifest.cells] == [
        (3, 1, SMALL),
        (4, 0, WIDER),
    ]
    assert (manifest.max_attempts, manifest.device, manifest.threads) == (3, "cpu", 1)


def test_manifest_without_data_dir_reads_data_from_the_study_folder(study):
    path = _manifest(study, [(3, 1, SMALL)])
    data = json.loads(path.read_text())
    assert data["data_dir"] == str(study.resolve() / "data")
    del data["data_dir"]
    path.write_text(json.dumps(data))
    assert read_manifest(path).data_dir == study.resolve() / "data"


def test_a_chunk_runs_on_data_prepared_outside_the_study_folder(tmp_path, data_dir):
    study = tmp_path / "study"
    path = study / "jobs" / "0.json"
    write_manifest(
        path,
        study_dir=study,
        data_dir=data_dir,
        dataset=SPEC,
        recipe=RECIPE,
        cells=[(0, 0, SMALL)],
        device="cpu",
    )
    assert main([str(path)]) == 0
    assert not (study / "data").exists()
    assert [r.result.status for r in _records(study, 0)] == ["done"]


def test_manifest_with_an_unknown_device_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="device 'gpu' is not one of auto, cpu, cuda, cuda:N"):
        write_manifest(
            tmp_path / "m.json",
            study_dir=tmp_path,
            dataset=SPEC,
            recipe=RECIPE,
            cells=[(0, 0, SMALL)],
            device="gpu",
        )
    assert not (tmp_path / "m.json").exists()


def test_manifest_with_an_unknown_key_lists_the_valid_keys(study):
    path = _manifest(study, [(0, 0, SMALL)])
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "gpus": 2}))
    with pytest.raises(
        ValueError, match=r"unknown keys \['gpus'\].*valid keys: study_dir, dataset"
    ):
        read_manifest(path)


def test_manifest_with_a_cell_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"appear twice: \[\(0, 1\)\]"):
        write_manifest(
            tmp_path / "m.json",
            study_dir=tmp_path,
            dataset=SPEC,
            recipe=RECIPE,
            cells=[(0, 1, SMALL), (0, 1, SMALL)],
        )


def test_manifest_without_a_cohort_key_reads_as_cohorts_of_one(study):
    path = _manifest(study, [(0, 0, SMALL)])
    data = json.loads(path.read_text())
    del data["cohort"]
    path.write_text(json.dumps(data))
    assert read_manifest(path).cohort == 1


def test_manifest_cohort_size_round_trips_and_must_be_positive(tmp_path):
    kwargs = dict(study_dir=tmp_path, dataset=SPEC, recipe=RECIPE, cells=[(0, 0, SMALL)])
    assert write_manifest(tmp_path / "m.json", cohort=4, **kwargs).cohort == 4
    assert read_manifest(tmp_path / "m.json").cohort == 4
    with pytest.raises(ValueError, match="cohort"):
        write_manifest(tmp_path / "n.json", cohort=0, **kwargs)
