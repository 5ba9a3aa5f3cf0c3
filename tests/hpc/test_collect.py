"""collect: the cells' records -> results.h5 through analysis.schema; unreadable records are
reported and skipped, unchanged inputs leave the file alone, a second collect reads only the
new records; and clean frees what finished cells no longer need."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis.schema import SCHEMA_VERSION, CellResult, read_results, write_cell
from anynet.complexity import complexity
from hpc.study.clean import clean
from hpc.study.collect import collect
from hpc.study.datasets import prepare_datasets
from hpc.study.layout import cell_paths
from hpc.study.population import sample_architectures
from hpc.study.spec import load_study
from tests.hpc.conftest import append_result

STUDY = """\
[study]
reference = "fashion_mnist"
architectures = 3
seeds = 2

[design]
max_depth = 2
max_width = 32
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 2

[datasets.fashion_mnist]
max_train = 300

[datasets.digits]
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    sample_architectures(study)
    return study


def _cell(study, dataset: str, arch_id: int, seed: int, **fields) -> CellResult:
    """A cell's record, appended to a pack as a worker appends it."""
    return append_result(
        study,
        dataset,
        arch_id,
        seed,
        fields.pop("status", "done"),
        top1_err=10.0 + arch_id + seed / 10,
        epochs=2,
        curves={"test_top1_err": np.array([20.0, 10.0 + arch_id + seed / 10])},
        **fields,
    )


def _file(study, dataset: str, arch_id: int, seed: int, **fields) -> Path:
    """A one-cell result file, as a study from before packs holds it."""
    cell = CellResult(dataset=dataset, arch_id=arch_id, seed=seed, status="done", **fields)
    path = cell_paths(study.root, dataset, arch_id, seed).legacy_result
    write_cell(path, cell)
    return path


def test_collect_merges_every_cell_with_architectures_datasets_and_reference(study) -> None:
    for arch_id in range(3):
        _cell(study, "fashion_mnist", arch_id, 0)
    _cell(study, "digits", 2, 1, status="failed", error="Traceback\nRuntimeError: out of memory")
    collected = collect(study)
    assert (collected.cells, collected.skipped, collected.written) == (4, (), True)
    results = read_results(study.root / "results.h5")
    assert results.attrs["reference"] == "fashion_mnist"
    assert results.attrs["study"] == study.name
    fashion = results.datasets["fashion_mnist"]
    assert list(fashion.columns["arch_id"]) == [0, 1, 2]
    assert list(fashion.columns["top1_err"]) == [10.0, 11.0, 12.0]
    assert fashion.curves["test_top1_err"].shape == (3, 2)
    assert fashion.info.num_train == 300 and fashion.info.classes == 10
    assert json.loads(fashion.info.recipe)["epochs"] == 2
    digits = results.datasets["digits"]
    assert list(digits.columns["status"]) == ["failed"]
    assert digits.columns["error"][0].endswith("RuntimeError: out of memory")


def test_architecture_columns_hold_complexity_at_224(study) -> None:
    collect(study)
    results = read_results(study.root / "results.h5")
    archs = results.architectures
    population = sample_architectures(study)
    assert list(archs["id"]) == [0, 1, 2]
    assert archs["depths"].shape == (3, 4)
    assert list(archs["depths"][1]) == list(population.archs[1].depths)
    assert list(archs["sampled_widths"][1]) == list(population.sampled[1].widths)
    expected = complexity(population.archs[1], resolution=224, num_classes=1000)
    assert (archs["flops"][1], archs["params"][1], archs["acts"][1]) == (
        expected.flops,
        expected.params,
        expected.acts,
    )


def test_subset_dataset_records_parent_and_classes_from_prepared_files(tmp_path: Path) -> None:
    (tmp_path / "study.toml").write_text(STUDY + "\n[datasets.digits_k3]\n")
    study = load_study(tmp_path)
    sample_architectures(study)
    prepare_datasets(study, ["digits_k3"], progress=False)
    collect(study)
    info = read_results(tmp_path / "results.h5").datasets["digits_k3"].info
    assert (info.parent, info.classes, len(info.subset_classes)) == ("digits", 3, 3)
    assert info.class_names == tuple(str(c) for c in info.subset_classes)
    assert 0 < info.num_train < 1438 * 0.5


def test_collect_after_prepare_rewrites_the_dataset_records(tmp_path: Path) -> None:
    # Collected before prepare, a subset's record comes from the registry (no classes
    # chosen yet); prepare changes an input of results.h5, so collect rewrites it.
    (tmp_path / "study.toml").write_text(STUDY + "\n[datasets.digits_k3]\n")
    study = load_study(tmp_path)
    sample_architectures(study)
    _cell(study, "digits", 0, 0)
    assert collect(study).written
    early = read_results(tmp_path / "results.h5").datasets["digits_k3"].info
    assert early.subset_classes == ()
    prepare_datasets(study, ["digits_k3"], progress=False)
    assert collect(study).written
    info = read_results(tmp_path / "results.h5").datasets["digits_k3"].info
    assert (info.classes, len(info.subset_classes)) == (3, 3)
    assert not collect(study).written


def test_corrupt_result_file_is_reported_and_never_merged(study) -> None:
    _cell(study, "digits", 0, 0)
    broken = cell_paths(study.root, "digits", 1, 0).legacy_result
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # a write cut short
    collected = collect(study)
    assert collected.cells == 1
    assert len(collected.skipped) == 1
    assert collected.skipped[0].startswith("results/digits/1-s0.h5 at byte 0: ")
    assert list(read_results(study.root / "results.h5").datasets["digits"].columns["arch_id"]) == [
        0
    ]


def test_collect_again_without_changes_leaves_results_h5_alone(study) -> None:
    _cell(study, "digits", 0, 0)
    assert collect(study).written
    before = (study.root / "results.h5").stat().st_mtime_ns
    again = collect(study)
    assert (again.written, again.cells) == (False, 1)
    assert (study.root / "results.h5").stat().st_mtime_ns == before
    _cell(study, "digits", 1, 0)
    third = collect(study)
    assert (third.written, third.cells) == (True, 2)


def test_a_file_the_system_will_not_read_now_is_merged_by_the_next_collect(study) -> None:
    import fcntl
    import os

    _cell(study, "digits", 0, 0)
    path = _file(study, "digits", 1, 0)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        collected = collect(study)
    finally:
        os.close(fd)
    assert (collected.cells, collected.skipped) == (1, ())  # not seen yet: read next time
    again = collect(study)
    assert (again.written, again.cells, again.skipped) == (True, 2, ())
    assert not collect(study).written


def test_collect_leaves_no_temporary_file(study) -> None:
    _cell(study, "digits", 0, 0)
    collect(study)
    assert sorted(p.name for p in study.root.iterdir() if p.name.startswith(".")) == []
    with h5py.File(study.root / "results.h5") as handle:
        assert handle.attrs["schema_version"] == SCHEMA_VERSION == 3


def test_clean_removes_checkpoints_of_finished_cells_only(study) -> None:
    _cell(study, "digits", 0, 0)
    _cell(study, "digits", 1, 0, status="failed", attempts=1)
    folder = study.root / "checkpoints" / "digits"
    folder.mkdir(parents=True)
    for name in ("0-s0.pt", "1-s0.pt", "2-s0.pt"):  # done, failed (retried), running
        (folder / name).write_bytes(b"x" * 1000)
    removed, freed = clean(study)
    assert [p.name for p in removed] == ["0-s0.pt"]
    assert freed == 1000
    assert sorted(p.name for p in folder.iterdir()) == ["1-s0.pt", "2-s0.pt"]


def test_clean_betons_keeps_prepared_files_that_unfinished_cells_read(study) -> None:
    prepare_datasets(study, ["digits"], progress=False)
    data = study.root / "data"
    before = sorted(p.name for p in data.iterdir() if p.name.startswith("digits"))
    assert before
    clean(study, betons=True)
    assert sorted(p.name for p in data.iterdir() if p.name.startswith("digits")) == before
    for arch_id in range(3):
        for seed in range(2):
            _cell(study, "digits", arch_id, seed)
    removed, _ = clean(study, betons=True)
    assert sorted(p.name for p in removed) == before
    assert not [p for p in data.iterdir() if p.name.startswith("digits")]


def test_results_h5_says_what_each_dataset_is_and_how_many_images_it_trained_on(
    tmp_path: Path,
) -> None:
    text = STUDY.replace(
        "[datasets.digits]", "[datasets.fashion_mnist_k2]\n[datasets.fashion_mnist_n60]"
    )
    (tmp_path / "study.toml").write_text(text)
    study = load_study(tmp_path)
    sample_architectures(study)
    prepare_datasets(study, progress=False)
    collect(study)
    infos = {n: t.info for n, t in read_results(tmp_path / "results.h5").datasets.items()}
    facts = {n: (i.kind, i.parent, i.num_train, i.classes) for n, i in infos.items()}
    assert facts == {
        "fashion_mnist": ("dataset", "", 300, 10),
        "fashion_mnist_k2": ("subset", "fashion_mnist", 60, 2),
        "fashion_mnist_n60": ("control", "fashion_mnist", 60, 10),
    }
    assert infos["fashion_mnist_n60"].num_test == infos["fashion_mnist"].num_test


def test_clean_removes_old_temporaries_and_keeps_those_of_writes_in_flight(study) -> None:
    import os
    import time

    from hpc.study.clean import TEMPORARY_AGE_S

    folder = study.root / "checkpoints" / "digits"
    folder.mkdir(parents=True)
    old = folder / ".0-s0.pt.k3j9.tmp"  # a writer killed in torch.save left it empty
    new = folder / ".1-s0.pt.x8f2.tmp"  # a checkpoint being written now
    index_tmp = study.root / "jobs" / ".results-index.npz.abcd.tmp"
    index_tmp.parent.mkdir(parents=True)
    for path in (old, new, index_tmp):
        path.write_bytes(b"")
    long_ago = time.time() - TEMPORARY_AGE_S - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(index_tmp, (long_ago, long_ago))
    removed, _ = clean(study)
    assert sorted(p.name for p in removed) == sorted([old.name, index_tmp.name])
    assert new.exists() and not old.exists()


def test_clean_folds_finished_cells_logs_into_their_records(study) -> None:
    _cell(study, "digits", 0, 0)
    log = cell_paths(study.root, "digits", 0, 0).log
    log.parent.mkdir(parents=True)
    log.write_text("left over when the worker died after writing the record\n")
    running = cell_paths(study.root, "digits", 1, 0).log
    running.write_text("epoch 1/2\n")
    removed, _ = clean(study)
    assert log in removed and not log.exists() and running.exists()


def test_clean_moves_one_cell_files_into_a_pack_with_their_logs(study) -> None:
    from hpc.study.packs import stored

    for arch_id in range(2):
        recipe = study.dataset("digits").recipe.to_json()
        _file(study, "digits", arch_id, 0, top1_err=7.0 + arch_id, recipe=recipe)
        log = cell_paths(study.root, "digits", arch_id, 0).log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"cell digits/{arch_id}-s0 attempt 1/3\n")
    before = collect(study)
    removed, _ = clean(study)
    assert sorted(p.name for p in removed) == ["0-s0.h5", "0-s0.log", "1-s0.h5", "1-s0.log"]
    [pack] = (study.root / "results" / "digits").iterdir()
    moved = stored(pack)
    assert [(s.result.arch_id, s.result.top1_err) for s in moved] == [(0, 7.0), (1, 8.0)]
    assert moved[1].log == "cell digits/1-s0 attempt 1/3\n"
    after = collect(study)
    assert (after.cells, after.stale) == (before.cells, before.stale) == (2, 0)
    assert clean(study) == ([], 0)  # nothing left to move
