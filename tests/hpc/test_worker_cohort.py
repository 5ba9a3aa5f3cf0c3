"""The worker in cohorts (manifest `cohort` > 1): a chunk's cells of one seed train in lockstep
and each keeps its own result, log and checkpoint, with the numbers of training alone."""

from __future__ import annotations

import shutil

import pytest

from anynet.arch import Architecture
from hpc.scheduling.manifest import write_manifest
from hpc.study.layout import StudyLayout, cell_paths
from hpc.study.packs import cell_records
from hpc.study.recipe import Recipe
from hpc.worker import run_chunk
from hpc.worker.train import CellInterrupted
from loaders.prepare import prepare
from loaders.registry import get_dataset

SPEC = get_dataset("digits", resolution=8)
RECIPE = Recipe(epochs=2, batch_size=64, base_lr=1.0, test_batch_size=512)
ARCHS = [
    Architecture(
        depths=(1, 1),
        widths=(w, 16),
        bottleneck_ratios=(1.0, 1.0),
        group_widths=(8, 8),
        stem_width=8,
        stem="small",
    )
    for w in (8, 16, 24)
]
CELLS = [(0, 0, ARCHS[0]), (1, 1, ARCHS[1]), (2, 0, ARCHS[2]), (3, 0, ARCHS[1])]
UNBUILDABLE = {**ARCHS[0].to_dict(), "group_widths": [3, 8]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    prepare(SPEC, path, progress=False)
    return path


def _study(root, data_dir, cohort):
    shutil.copytree(data_dir, root / "data")
    path = root / "jobs" / "0.json"
    write_manifest(
        path, study_dir=root, dataset=SPEC, recipe=RECIPE, cells=CELLS, device="cpu", cohort=cohort
    )
    return path


@pytest.fixture(scope="module")
def solo(tmp_path_factory, data_dir):
    return run_chunk(_study(tmp_path_factory.mktemp("solo"), data_dir, 1))


def _record(study, arch_id, seed):
    """The cell's one record (its result and its log)."""
    [record] = cell_records(StudyLayout.at(study), "digits", arch_id, seed)
    return record


def _curves(result):
    return {k: v.tolist() for k, v in result.curves.items() if k in ("train_loss", "test_top1_err")}


def test_a_chunk_in_cohorts_gives_every_cell_its_solo_numbers_in_manifest_order(
    tmp_path, data_dir, solo
):
    results = run_chunk(_study(tmp_path, data_dir, 3))
    assert [(r.arch_id, r.seed, r.status) for r in results] == [
        (0, 0, "done"),
        (1, 1, "done"),
        (2, 0, "done"),
        (3, 0, "done"),
    ]
    assert [_curves(r) for r in results] == [_curves(r) for r in solo]
    assert _record(tmp_path, 2, 0).result.top1_err == solo[2].top1_err
    assert "(cohort of 3)" in _record(tmp_path, 3, 0).log
    assert "(cohort of 1)" in _record(tmp_path, 1, 1).log


def test_a_cell_that_cannot_be_built_fails_alone_and_its_cohort_trains(tmp_path, data_dir, solo):
    import json

    path = _study(tmp_path, data_dir, 3)
    data = json.loads(path.read_text())
    data["cells"][0]["arch"] = UNBUILDABLE
    path.write_text(json.dumps(data))
    results = run_chunk(path)
    assert [r.status for r in results] == ["failed", "done", "done", "done"]
    assert "group" in results[0].error
    assert [_curves(r) for r in results[1:]] == [_curves(r) for r in solo[1:]]


def test_a_stopped_cohort_resumes_every_member_to_its_solo_numbers(tmp_path, data_dir, solo):
    path = _study(tmp_path, data_dir, 3)
    polls = []
    with pytest.raises(CellInterrupted):
        run_chunk(path, stop_flag=lambda: polls.append(1) or len(polls) == 30)
    for arch_id in (0, 2, 3):
        paths = cell_paths(tmp_path, "digits", arch_id, 0)
        assert paths.checkpoint.exists() and not cell_records(
            StudyLayout.at(tmp_path), "digits", arch_id, 0
        )
    results = run_chunk(path)
    assert "resumed after epoch 1/2" in _record(tmp_path, 3, 0).log
    assert [_curves(r) for r in results] == [_curves(r) for r in solo]
