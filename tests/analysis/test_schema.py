"""The results format: a cell's result file and results.h5 round-trip exactly, reject what
is not theirs, and never leave a partial file behind."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis.schema import (
    ARCH_COLUMNS,
    CURVES,
    SCHEMA_VERSION,
    SCORES_VERSION,
    CellResult,
    CorruptResultError,
    DatasetInfo,
    ScoreTable,
    add_scores,
    read_cell,
    read_results,
    read_root_attr,
    read_score_file,
    write_cell,
    write_results,
    write_score_file,
)


def _cell(dataset: str = "mnist", arch_id: int = 3, seed: int = 1, **kw) -> CellResult:
    values = dict(
        status="done",
        top1_err=12.5,
        top5_err=1.25,
        best_top1_err=11.0,
        best_epoch=1,
        epochs=2,
        train_seconds=4.5,
        flops=123_456,
        job_id="17_2",
        host="n1",
        curves={"train_loss": np.array([2.3, 1.1]), "test_top1_err": np.array([20.0, 12.5])},
    )
    values.update(kw)
    return CellResult(dataset=dataset, arch_id=arch_id, seed=seed, **values)


def _archs(n: int = 4, stages: int = 3) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {c: np.arange(n) for c in ARCH_COLUMNS}
    for c in (
        "depths",
        "widths",
        "bottleneck_ratios",
        "group_widths",
        "sampled_widths",
        "sampled_group_widths",
    ):
        cols[c] = np.ones((n, stages), dtype=np.int64)
    cols["name"] = np.array([f"a{i}" for i in range(n)])
    cols["stem"] = np.array(["imagenet"] * n)
    return cols


def test_cell_round_trips_every_field(tmp_path: Path) -> None:
    cell = _cell()
    write_cell(tmp_path / "c.h5", cell)
    back = read_cell(tmp_path / "c.h5")
    assert (back.dataset, back.arch_id, back.seed, back.status) == ("mnist", 3, 1, "done")
    assert (back.top1_err, back.best_epoch, back.flops, back.job_id) == (12.5, 1, 123_456, "17_2")
    assert math.isnan(back.data_seconds)
    np.testing.assert_array_equal(back.curves["test_top1_err"], [20.0, 12.5])
    assert sorted(back.curves) == ["test_top1_err", "train_loss"]


def test_write_leaves_no_temporary_file_and_a_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "mnist" / "0-s0.h5"
    write_cell(path, _cell())
    assert sorted(p.name for p in path.parent.iterdir()) == ["0-s0.h5"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_truncated_file_is_corrupt_not_a_result(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    write_cell(path, _cell())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptResultError, match="c.h5"):
        read_cell(path)


def test_a_file_locked_by_another_writer_is_no_corrupt_file(tmp_path: Path) -> None:
    # HDF5 locks files it opens; a lock the system refuses is an OSError with an errno,
    # not a verdict on the file.
    import fcntl

    path = tmp_path / "c.h5"
    write_cell(path, _cell())
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            read_cell(path)
    finally:
        os.close(fd)
    assert read_cell(path).top1_err == 12.5


def test_foreign_hdf5_file_is_rejected_with_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["schema_version"] = 99
    with pytest.raises(CorruptResultError, match="schema_version 99, expected 1"):
        read_cell(path)


def test_unknown_status_and_curve_are_refused() -> None:
    with pytest.raises(ValueError, match="status 'ok' is not one of"):
        _cell(status="ok")
    with pytest.raises(ValueError, match="unknown curves"):
        _cell(curves={"lr": np.zeros(2)})


def test_results_round_trip_columns_curves_and_attributes(tmp_path: Path) -> None:
    cells = [_cell(arch_id=a, seed=s) for a in (2, 0) for s in (1, 0)]
    cells.append(
        _cell(
            dataset="mnist_k2",
            arch_id=0,
            seed=0,
            status="diverged",
            diverged_epoch=0,
            curves={"train_loss": np.array([9.0])},
        )
    )
    infos = [
        DatasetInfo("mnist", 10, 28, 100, 20, class_names=tuple("0123456789")),
        DatasetInfo("mnist_k2", 2, 28, 20, 4, parent="mnist", subset_classes=(3, 7)),
    ]
    path = tmp_path / "results.h5"
    write_results(
        path, architectures=_archs(), datasets=infos, cells=cells, attrs={"reference": "mnist"}
    )
    res = read_results(path)
    assert res.attrs["schema_version"] == SCHEMA_VERSION and res.attrs["reference"] == "mnist"
    table = res.datasets["mnist"]
    assert len(table) == 4
    assert table.columns["arch_id"].tolist() == [0, 0, 2, 2]  # sorted by (arch, seed)
    assert table.columns["seed"].tolist() == [0, 1, 0, 1]
    assert table.columns["status"].tolist() == ["done"] * 4
    assert set(table.curves) == set(CURVES)
    assert table.curves["train_loss"].shape == (4, 2)
    subset = res.datasets["mnist_k2"]
    assert subset.info.parent == "mnist" and subset.info.subset_classes == (3, 7)
    assert subset.columns["diverged_epoch"].tolist() == [0]
    assert res.datasets["mnist"].info.class_names == tuple("0123456789")
    assert res.architectures["depths"].shape == (4, 3)
    assert read_root_attr(path, "reference") == "mnist"
    assert read_root_attr(tmp_path / "absent.h5", "reference", "none") == "none"


def test_results_refuse_a_cell_of_an_undeclared_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names dataset 'cifar10', not declared"):
        write_results(
            tmp_path / "r.h5",
            architectures=_archs(),
            datasets=[DatasetInfo("mnist", 10, 28, 1, 1)],
            cells=[_cell("cifar10")],
        )
    assert not list(tmp_path.iterdir())


def test_results_refuse_missing_architecture_columns(tmp_path: Path) -> None:
    cols = _archs()
    del cols["flops"]
    with pytest.raises(ValueError, match=r"lack columns \['flops'\]"):
        write_results(tmp_path / "r.h5", architectures=cols, datasets=[], cells=[])


# --- dataset kinds: subsets and size-matched controls (schema_version 2) -------------------
def _kinds_file(path: Path) -> None:
    infos = [
        DatasetInfo("mnist", 10, 28, 100, 20),
        DatasetInfo("mnist_k2", 2, 28, 20, 4, parent="mnist", subset_classes=(3, 7)),
        DatasetInfo("mnist_n20", 10, 28, 20, 20, parent="mnist", kind="control"),
    ]
    write_results(path, architectures=_archs(), datasets=infos, cells=[])


def test_a_control_and_a_subset_read_back_with_their_kind_parent_and_images(tmp_path: Path) -> None:
    _kinds_file(tmp_path / "r.h5")
    datasets = read_results(tmp_path / "r.h5").datasets
    kinds = {name: (t.info.kind, t.info.parent, t.info.num_train) for name, t in datasets.items()}
    assert kinds == {
        "mnist": ("dataset", "", 100),
        "mnist_k2": ("subset", "mnist", 20),
        "mnist_n20": ("control", "mnist", 20),
    }
    with h5py.File(tmp_path / "r.h5") as handle:
        assert handle.attrs["schema_version"] == SCHEMA_VERSION == 3
        assert handle["datasets/mnist_n20"].attrs["kind"] == "control"


def test_a_version_1_file_reads_its_derived_datasets_as_subsets(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _kinds_file(path)
    with h5py.File(path, "a") as handle:  # what version 1 wrote: no kind attribute
        handle.attrs["schema_version"] = 1
        for group in handle["datasets"].values():
            del group.attrs["kind"]
    datasets = read_results(path).datasets
    assert [t.info.kind for t in datasets.values()] == ["dataset", "subset", "subset"]


def test_without_a_kind_a_control_is_known_by_its_declared_number_of_images() -> None:
    spec = '{"name": "mnist_n20", "parent": "mnist", "n": 20, "k": null}'
    assert DatasetInfo("mnist_n20", 10, 28, 20, 20, parent="mnist", spec=spec).kind == "control"
    subset = '{"name": "mnist_k2", "parent": "mnist", "n": null, "k": 2}'
    assert DatasetInfo("mnist_k2", 2, 28, 20, 4, parent="mnist", spec=subset).kind == "subset"
    assert DatasetInfo("mnist", 10, 28, 100, 20, spec='{"n": 5}').kind == "dataset"


def test_a_kind_that_contradicts_the_parent_is_refused() -> None:
    with pytest.raises(ValueError, match="kind 'size'; valid: dataset, subset, control"):
        DatasetInfo("a", 10, 28, 1, 1, parent="b", kind="size")
    with pytest.raises(ValueError, match="'a': a control needs its parent"):
        DatasetInfo("a", 10, 28, 1, 1, kind="control")
    with pytest.raises(ValueError, match="'a': a dataset names no parent"):
        DatasetInfo("a", 10, 28, 1, 1, parent="b", kind="dataset")
    with pytest.raises(ValueError, match="control 'a' keeps every class"):
        DatasetInfo("a", 2, 28, 1, 1, parent="b", subset_classes=(1, 2), kind="control")


def test_results_of_an_unknown_version_name_the_versions_read(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _kinds_file(path)
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = 4
    with pytest.raises(CorruptResultError, match="schema_version 4; this anysweep reads 1, 2, 3"):
        read_results(path)


# --- training-free scores: the versioned /datasets/<name>/scores addition -------------------


def _scores(dataset: str = "mnist") -> ScoreTable:
    values = [[1.5, -np.inf, 100.0], [2.5, 7.0, 200.0]]
    names = ("naswot", "jacob_cov", "params")
    return ScoreTable(dataset, np.array([3, 0]), names, np.array(values), 64, 5)


def _write_with_scores(path: Path, scores: list[ScoreTable]) -> None:
    infos = [DatasetInfo("mnist", 10, 28, 100, 20), DatasetInfo("cifar10", 10, 32, 50, 10)]
    write_results(path, architectures=_archs(), datasets=infos, cells=[_cell()], scores=scores)


def test_scores_round_trip_through_results(tmp_path: Path) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    back = read_results(tmp_path / "r.h5").scores
    assert list(back) == ["mnist"]
    table = back["mnist"]
    assert table.arch_ids.tolist() == [3, 0]
    assert table.names == ("naswot", "jacob_cov", "params")
    assert table.values.tolist() == [[1.5, -np.inf, 100.0], [2.5, 7.0, 200.0]]
    assert (table.minibatch_size, table.seed) == (64, 5)
    assert table.column("params").tolist() == [100.0, 200.0]


def test_scores_group_carries_its_version_and_attributes(tmp_path: Path) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    with h5py.File(tmp_path / "r.h5", "r") as handle:
        group = handle["datasets/mnist/scores"]
        attrs = {k: int(group.attrs[k]) for k in ("scores_version", "minibatch_size")}
        assert attrs == {"scores_version": SCORES_VERSION, "minibatch_size": 64}
        assert group["seed"][()].tolist() == [5, 5]
        assert group["values"].shape == (2, 3) and group["values"].dtype == np.float64
        assert "scores" not in handle["datasets/cifar10"]


def test_results_without_scores_read_with_no_score_tables(tmp_path: Path) -> None:
    _write_with_scores(tmp_path / "r.h5", [])
    res = read_results(tmp_path / "r.h5")
    assert (res.scores, len(res.datasets["mnist"])) == ({}, 1)


def test_scores_of_an_unknown_version_are_refused_with_both_versions(tmp_path: Path) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    with h5py.File(tmp_path / "r.h5", "a") as handle:
        handle["datasets/mnist/scores"].attrs["scores_version"] = SCORES_VERSION + 1
    with pytest.raises(CorruptResultError, match=f"scores_version {SCORES_VERSION + 1}; this"):
        read_results(tmp_path / "r.h5")


def test_scores_of_an_undeclared_dataset_are_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"undeclared: \['svhn'\]"):
        _write_with_scores(tmp_path / "r.h5", [_scores("svhn")])
    assert not list(tmp_path.iterdir())


def test_score_table_refuses_values_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"must be \(architectures, scores\) = \(2, 1\)"):
        ScoreTable("mnist", np.array([0, 1]), ("naswot",), np.zeros((2, 2)), 64, 0)


def test_score_table_refuses_repeated_architectures() -> None:
    with pytest.raises(ValueError, match="must be distinct"):
        ScoreTable("mnist", np.array([1, 1]), ("naswot",), np.zeros((2, 1)), 64, 0)


def test_score_file_round_trips_one_table(tmp_path: Path) -> None:
    write_score_file(tmp_path / "s" / "mnist.h5", _scores())
    back = read_score_file(tmp_path / "s" / "mnist.h5")
    assert (back.dataset, back.arch_ids.tolist(), back.seed) == ("mnist", [3, 0], 5)
    assert back.values[1].tolist() == [2.5, 7.0, 200.0]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["mnist.h5"]


def test_a_cell_file_is_no_score_file(tmp_path: Path) -> None:
    write_cell(tmp_path / "c.h5", _cell())
    with pytest.raises(CorruptResultError, match="scores_version -1"):
        read_score_file(tmp_path / "c.h5")


def test_scores_of_several_seeds_round_trip_one_row_per_architecture_and_seed(
    tmp_path: Path,
) -> None:
    table = ScoreTable("mnist", [0, 3, 0], ("naswot",), [[1.0], [2.0], [3.0]], 64, [0, 0, 1])
    _write_with_scores(tmp_path / "r.h5", [table])
    back = read_results(tmp_path / "r.h5").scores["mnist"]
    assert (back.arch_ids.tolist(), back.seeds.tolist()) == ([0, 3, 0], [0, 0, 1])
    assert (back.seed_list, back.column("naswot").tolist()) == ([0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"hold seeds \[0, 1\], not one"):
        _ = back.seed


def test_version_1_scores_with_one_seed_attribute_are_still_read(tmp_path: Path) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    with h5py.File(tmp_path / "r.h5", "a") as handle:
        group = handle["datasets/mnist/scores"]
        del group["seed"]
        group.attrs["seed"], group.attrs["scores_version"] = 7, 1
    back = read_results(tmp_path / "r.h5").scores["mnist"]
    assert (back.seeds.tolist(), back.seed, back.arch_ids.tolist()) == ([7, 7], 7, [3, 0])


def test_score_table_refuses_a_repeated_architecture_and_seed_row() -> None:
    with pytest.raises(ValueError, match="rows and score names must be distinct"):
        ScoreTable("mnist", [1, 1], ("naswot",), np.zeros((2, 1)), 64, [2, 2])


def test_add_scores_stores_and_replaces_tables_in_an_existing_results_file(
    tmp_path: Path,
) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    new = ScoreTable("mnist", [0], ("snip",), [[4.0]], 32, 1)
    other = ScoreTable("cifar10", [0, 3], ("flops",), [[9.0], [8.0]], 16, 0)
    add_scores(tmp_path / "r.h5", [new, other])
    res = read_results(tmp_path / "r.h5")
    assert {k: (v.names, v.values.tolist()) for k, v in res.scores.items()} == {
        "mnist": (("snip",), [[4.0]]),
        "cifar10": (("flops",), [[9.0], [8.0]]),
    }
    assert len(res.datasets["mnist"]) == 1 and [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_add_scores_refuses_an_undeclared_dataset_and_leaves_the_file_alone(
    tmp_path: Path,
) -> None:
    _write_with_scores(tmp_path / "r.h5", [_scores()])
    before = (tmp_path / "r.h5").read_bytes()
    with pytest.raises(ValueError, match=r"undeclared: \['svhn'\]"):
        add_scores(tmp_path / "r.h5", [_scores("svhn")])
    assert (tmp_path / "r.h5").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]
