"""The planner: missing cells, their cost, chunks that fit the time limit, arrays split at
MaxArraySize, and a dry run of the paper's study that touches no data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.schema import CellResult, write_cell
from hpc.scheduling.plan import (
    CHUNK_OVERHEAD_S,
    chunk_cells,
    dataset_costs,
    make_plan,
)
from hpc.study.datasets import dataset_sizes
from hpc.study.layout import cell_paths
from hpc.study.population import sample_architectures
from hpc.study.presets import PRESETS_DIR
from hpc.study.results import Cell, standing
from hpc.study.spec import load_study, parse_study

STUDY = """\
[study]
architectures = 5
seeds = 2
max_attempts = 2

[design]
max_depth = 2
max_width = 32
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 2

[cluster]
time_min = 10
margin = 1.0
throughput = 1e15

[datasets.digits]

[datasets.fashion_mnist]
max_train = 1000
max_test = 300
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "study.toml").write_text(STUDY)
    return load_study(tmp_path)


def _file(study, dataset: str, arch_id: int, seed: int, status: str = "done", **fields) -> Path:
    """A one-cell result file, as a study from before packs holds it."""
    path = cell_paths(study.root, dataset, arch_id, seed).legacy_result
    write_cell(
        path, CellResult(dataset=dataset, arch_id=arch_id, seed=seed, status=status, **fields)
    )
    return path


def test_cell_parses_its_key() -> None:
    assert Cell.parse("fashion_mnist/3-s0") == Cell("fashion_mnist", 3, 0)
    assert Cell("imagenet_k10", 12, 1).key == "imagenet_k10/12-s1"
    with pytest.raises(ValueError, match="DATASET/ARCH-sSEED"):
        Cell.parse("fashion_mnist/3")


def test_chunks_fill_the_capacity_evenly() -> None:
    cells = [(a, 0) for a in range(10)]
    chunks = chunk_cells("d", cells, [100.0] * 10, capacity=CHUNK_OVERHEAD_S + 450)
    # 1,000 s of cells in chunks of at most 450 s: 3 chunks, as even as whole cells allow.
    assert [len(c.cells) for c in chunks] == [3, 4, 3]
    assert [cell for c in chunks for cell in c.cells] == cells
    assert [c.seconds for c in chunks] == [
        CHUNK_OVERHEAD_S + 300,
        CHUNK_OVERHEAD_S + 400,
        CHUNK_OVERHEAD_S + 300,
    ]


def test_a_cell_longer_than_the_capacity_gets_a_chunk_of_its_own() -> None:
    chunks = chunk_cells("d", [(0, 0), (1, 0), (2, 0)], [10.0, 5000.0, 10.0], capacity=600)
    assert [c.cells for c in chunks] == [((0, 0),), ((1, 0),), ((2, 0),)]


def test_sizes_come_from_the_registry_scaled_for_subsets_and_caps(study) -> None:
    from loaders.registry import REGISTRY

    digits = REGISTRY["digits"]
    assert dataset_sizes(study.dataset("digits")) == (digits.num_train, digits.num_test, 10, False)
    assert dataset_sizes(study.dataset("fashion_mnist")) == (1000, 300, 10, False)
    # A subset selects from its parent's files: 2 of 10 classes of the capped parent.
    text = STUDY + "\n[datasets.fashion_mnist_k2]\n"
    subset = parse_study(text, root=study.root).dataset("fashion_mnist_k2")
    assert dataset_sizes(subset) == (200, 60, 2, False)
    text = (
        STUDY.replace("[datasets.fashion_mnist]", "[datasets.mnist]")
        + "\n[datasets.fashion_mnist_k2]\n"
    )
    subset = parse_study(text, root=study.root).dataset("fashion_mnist_k2")
    assert dataset_sizes(subset) == (12000, 2000, 2, False)  # 2/10 of 60,000 and 10,000


def test_every_cell_is_planned_when_nothing_ran(study) -> None:
    population = sample_architectures(study)
    plan = make_plan(study, population, array_size=100)
    assert plan.total == 5 * 2 * 2
    assert len(plan.missing) == 20
    assert sum(len(c.cells) for c in plan.chunks) == 20
    assert {a.dataset for a in plan.arrays} == {"digits", "fashion_mnist"}
    assert all(len({c.dataset for c in a.chunks}) == 1 for a in plan.arrays)


def test_arrays_split_at_max_array_size(study) -> None:
    population = sample_architectures(study)
    # 0.05 of 10 minutes leaves less than one cell per chunk: one chunk per cell.
    text = STUDY.replace("margin = 1.0", "margin = 0.05")
    (study.root / "study.toml").write_text(text)
    plan = make_plan(load_study(study.root), population, array_size=4)
    digits = [a for a in plan.arrays if a.dataset == "digits"]
    assert [len(a.chunks) for a in digits] == [4, 4, 2]
    assert [a.label for a in digits] == ["digits-0", "digits-1", "digits-2"]


def test_finished_and_active_cells_are_not_planned(study, record) -> None:
    population = sample_architectures(study)
    record(study, "digits", 0, 0, "done")
    record(study, "digits", 0, 1, "diverged")
    record(study, "digits", 1, 0, "failed", attempts=1)  # retried: 1 of 2 attempts
    record(study, "digits", 1, 1, "failed", attempts=2)  # out of attempts
    active = {Cell("digits", 2, 0), Cell("digits", 2, 1)}
    plan = make_plan(study, population, active=active, array_size=100)
    planned = {Cell(c.dataset, a, s) for c in plan.chunks for a, s in c.cells}
    assert Cell("digits", 1, 0) in planned
    assert not planned & {Cell("digits", 0, 0), Cell("digits", 0, 1), Cell("digits", 1, 1)}
    assert not planned & active
    assert (plan.finished, plan.active, len(planned)) == (3, 2, 15)


def test_the_totals_add_up_when_active_tasks_have_finished_some_of_their_cells(
    study, record
) -> None:
    population = sample_architectures(study)
    for arch_id in range(5):
        record(study, "digits", arch_id, 0, "done")
    # A running task's chunk lists cells it has finished already and some it has not.
    active = {Cell("digits", a, s) for a in range(5) for s in (0, 1)}
    plan = make_plan(study, population, active=active, array_size=100)
    assert (plan.total, plan.finished, plan.active, len(plan.missing)) == (20, 5, 5, 10)
    assert plan.finished + plan.active + len(plan.missing) == plan.total


def test_a_corrupt_result_file_counts_as_missing(study) -> None:
    population = sample_architectures(study)
    path = cell_paths(study.root, "digits", 3, 0).legacy_result
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89HDF\r\n half-written")
    now = standing(study)
    assert [(f, o) for f, o, _ in now.index.corrupt] == [("results/digits/3-s0.h5", 0)]
    plan = make_plan(study, population, array_size=100)
    assert Cell("digits", 3, 0) in plan.missing


def test_a_torn_record_at_a_packs_end_counts_as_missing(study, record) -> None:
    population = sample_architectures(study)
    record(study, "digits", 0, 0, "done")
    record(study, "digits", 1, 0, "done")
    pack = study.layout.pack("digits", "T0001.test.0")
    pack.write_bytes(pack.read_bytes()[:-10])  # a writer killed in the middle of an append
    now = standing(study)
    assert now.index.corrupt == []  # a torn end is a write cut short, not corruption
    plan = make_plan(study, population, outcomes=now.outcomes, array_size=100)
    assert Cell("digits", 1, 0) in plan.missing and Cell("digits", 0, 0) not in plan.missing
    record(study, "digits", 1, 0, "done")  # the next append cuts the torn end off first
    assert len(standing(study).index) == 2


def test_scan_reads_a_changed_file_again(study) -> None:
    _file(study, "digits", 0, 0, "failed", attempts=1, error="Traceback\nValueError: boom\n")
    now = standing(study)
    assert now.index.errors[now.index.records["error"][0]] == "ValueError: boom"
    path = cell_paths(study.root, "digits", 0, 0).legacy_result
    first = path.stat()
    _file(study, "digits", 0, 0, "done", attempts=2)
    # A coarse clock can give both writes one mtime, and these two files have one size:
    # the rewrite is still seen (a new inode).
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    assert path.stat().st_size == first.st_size
    assert _status(standing(study), 0) == "done"


def test_a_pack_that_grew_is_read_from_where_it_ended(study, record, monkeypatch) -> None:
    from hpc.study import packs

    record(study, "digits", 0, 0, "failed", error="Traceback\nValueError: boom\n")
    assert _status(standing(study), 0) == "failed"
    reads = []
    real = packs.read
    monkeypatch.setattr(
        packs, "read", lambda path, start=0: reads.append(start) or real(path, start)
    )
    record(study, "digits", 0, 0, "done", attempts=2)
    now = standing(study)
    assert _status(now, 0) == "done" and len(now.index) == 2
    assert reads == [now.index.records["offset"][1]]  # only the appended record was read


def _status(now, arch_id: int) -> str:
    row = now.outcomes.row[now.outcomes.grid.position(Cell("digits", arch_id, 0))]
    return ("done", "diverged", "failed")[now.index.records["status"][row]]


def test_a_file_the_system_will_not_read_now_is_never_cached(study) -> None:
    import fcntl

    path = _file(study, "digits", 0, 0, "done", attempts=1)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process's writer would hold it
        now = standing(study)
        assert len(now.index) == 0 and now.outcomes.row.max() == -1
    finally:
        os.close(fd)
    assert _status(standing(study), 0) == "done"


def test_estimates_follow_flops_and_calibrate_on_measured_cells(study, record) -> None:
    population = sample_architectures(study)
    (study.root / "study.toml").write_text(STUDY.replace("throughput = 1e15", "throughput = 1e9"))
    study = load_study(study.root)
    costs = dataset_costs(study, population, None)
    digits = costs["digits"]
    train, test, _, _ = dataset_sizes(study.dataset("digits"))
    expected = digits.flops[0] * 2 * (3 * train + test) / 1e9 + 30
    assert digits.pricing.k == 1  # priced by multiply-adds alone: cohorts save nothing
    assert digits.seconds(0) == pytest.approx(expected)
    assert digits.calibration == 1.0
    # One measured cell, twice as slow as estimated, calibrates its dataset, and the
    # others too while they have no measurement of their own.
    record(study, "digits", 0, 0, "done", train_seconds=2 * expected)
    costs = dataset_costs(study, population, standing(study).outcomes)
    assert costs["digits"].calibration == pytest.approx(2.0)
    assert costs["fashion_mnist"].calibration == pytest.approx(2.0)
    assert costs["digits"].seconds(0) == pytest.approx(2 * expected)


def test_flops_are_counted_at_each_datasets_resolution(study) -> None:
    from anynet.complexity import complexity

    population = sample_architectures(study)
    costs = dataset_costs(study, population, None)
    arch = population.archs[1]
    assert costs["digits"].flops[1] == complexity(arch, resolution=16, num_classes=10).flops
    assert costs["fashion_mnist"].flops[1] == complexity(arch, resolution=28, num_classes=10).flops


def test_paper_dry_run_plans_9500_cells_within_seconds_without_touching_data(
    tmp_path: Path,
) -> None:
    (tmp_path / "study.toml").write_text((PRESETS_DIR / "paper.toml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hpc.cli", "launch", str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    seconds = time.perf_counter() - start
    # The plan, then one error: the preset's placeholder paths are not there.
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "anysweep launch: error: " in done.stderr
    assert "folder /path/to/imagenet does not exist" in done.stderr
    assert "/path/to/cifar100/cifar-100-python/meta not found" in done.stderr
    assert "9,500 cells, 0 finished, 0 queued or running, 9,500 to run" in done.stdout
    assert "in 19 arrays (MaxArraySize 1,001)" in done.stdout
    hours = float(done.stdout.split("estimated ")[1].split(" GPU-hours")[0].replace(",", ""))
    # On an H200 in cohorts of 8 with CUDA graphs: 21.1 GPU-days for the paper's 7,500 cells
    # and 2,000 size controls, 30 s of start-up per cell included (the V100's 95 GPU-days
    # are about 2,290 GPU-hours).
    assert 450 < hours < 560
    # A cohort of 8 ImageNet cells (about 3 hours) fills a task of 300 min at 75 %.
    assert "imagenet-0                   63     500   8" in done.stdout
    assert seconds < 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_dataset_cost_flops_are_per_architecture_id(study) -> None:
    population = sample_architectures(study)
    costs = dataset_costs(study, population, None)
    assert costs["digits"].flops.shape == (5,)
    assert np.all(costs["digits"].flops > 0)
