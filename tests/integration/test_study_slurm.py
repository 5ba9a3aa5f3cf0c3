"""A study on the real local SLURM cluster: launched as arrays, followed truthfully by status,
collected, launched again (nothing to do), grown by a dataset (only its cells train), and
launched twice at once (each cell submitted once); prepared and run from the command line."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from analysis.schema import read_results
from hpc.cli import main
from hpc.scheduling.launch import launch
from hpc.scheduling.records import read_records as read_launch_records
from hpc.scheduling.schedulers.slurm import max_array_size
from hpc.scheduling.status import study_status, tasks
from hpc.study.collect import collect
from hpc.study.datasets import prepare_datasets
from hpc.study.spec import load_study
from loaders.prepare import open_prepared

pytestmark = pytest.mark.slurm

# 2 architectures x 2 seeds x 2 datasets. A cell's estimate is its 30 s overhead (the
# throughput makes the work itself free): 4 cells per dataset in chunks of 90 s make 2 tasks.


def read_records(study) -> list[dict]:
    """The study's launch records as plain data, each array's tasks listed with their cells."""
    out = []
    for record in read_launch_records(study):
        data = record.to_dict()
        for array, raw in zip(record.arrays, data["arrays"], strict=True):
            raw["tasks"] = [t.to_dict() for t in array.tasks]
        out.append(data)
    return out


STUDY = """\
[study]
architectures = 2
seeds = 2

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

[cluster]
gpus = 0
cpus = 1
mem_gb = 1
time_min = 5
margin = 0.7
throughput = 1e15

[datasets.digits]

[datasets.fashion_mnist]
max_train = 400
max_test = 200
"""


def _wait_all(study, wait_for_job, records) -> None:
    for record in records:
        for array in record["arrays"]:
            for index in range(len(array["tasks"])):
                task = f"{array['job_id']}_{index}" if len(array["tasks"]) > 1 else array["job_id"]
                assert wait_for_job(task, timeout_s=180) == "COMPLETED"


def _cells(record) -> list[tuple[str, int, int]]:
    return sorted(
        (a["dataset"], *c) for a in record["arrays"] for t in a["tasks"] for c in t["cells"]
    )


def test_study_launches_as_arrays_reports_truthfully_collects_and_grows(
    slurm_cluster, wait_for_job, tmp_path: Path
) -> None:
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    prepare_datasets(study, progress=False)
    assert max_array_size(study) == slurm_cluster.max_array_size  # asked of scontrol

    launched = launch(study, cluster="slurm")
    record = read_records(study)[0]
    assert len(launched.job_ids) == 2  # one array per dataset
    assert [len(a["tasks"]) for a in record["arrays"]] == [2, 2]
    assert len(_cells(record)) == 8

    # Right after submission every cell is queued or running, and nothing is missing.
    counts = study_status(study).counts
    for name in ("digits", "fashion_mnist"):
        row = counts[name]
        assert row["queued"] + row["running"] + row["done"] == 4
        assert row["missing"] == row["failed"] == 0

    _wait_all(study, wait_for_job, [record])
    status = study_status(study)
    assert {n: r["done"] for n, r in status.counts.items()} == {"digits": 4, "fashion_mnist": 4}
    # Its tasks ask for no GPU (gpus = 0): their time is counted in CPU-hours.
    assert status.tasks_active == 0 and status.cpu_hours_spent > 0 == status.gpu_hours_spent

    collected = collect(study)
    results = read_results(tmp_path / "results.h5")
    assert collected.cells == 8
    assert sorted(results.datasets["digits"].columns["arch_id"]) == [0, 0, 1, 1]
    assert set(results.datasets["fashion_mnist"].columns["job_id"]) <= {
        f"{record['arrays'][1]['job_id']}_{i}" for i in range(2)
    }

    again = launch(study, cluster="slurm")
    assert (again.record, len(read_records(study))) == ("", 1)

    # A new dataset: two launches at once submit its cells, each once, and nothing else.
    (tmp_path / "study.toml").write_text(STUDY + "\n[datasets.fashion_mnist_k2]\n")
    study = load_study(tmp_path)
    prepare_datasets(study, ["fashion_mnist_k2"], progress=False)
    outcomes: list = []
    threads = [threading.Thread(target=lambda: outcomes.append(launch(study))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(bool(o.record) for o in outcomes) == [False, True]
    records = read_records(study)
    assert len(records) == 2
    assert _cells(records[1]) == [("fashion_mnist_k2", a, s) for a in range(2) for s in range(2)]
    assert {t.dataset for t in tasks(study) if t.state != "ended"} <= {"fashion_mnist_k2"}

    _wait_all(study, wait_for_job, records[1:])
    collected = collect(study)
    assert collected.cells == 12
    assert study_status(study).counts["fashion_mnist_k2"]["done"] == 4


def test_prepare_and_run_from_the_command_line_on_slurm(
    slurm_cluster, wait_for_job, tmp_path: Path, capsys
) -> None:
    # What a user types: prepare as a Slurm job, then run, which launches, waits, collects.
    (tmp_path / "study.toml").write_text(STUDY.split("[datasets.fashion_mnist]")[0])
    study = load_study(tmp_path)
    assert main(["prepare", str(tmp_path), "--cluster", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "submitted 1 prepare job(s): " in out
    job_id = out.split("prepare job(s): ")[1].split(";")[0]
    assert wait_for_job(job_id, timeout_s=180) == "COMPLETED"
    prepared = open_prepared(study.dataset("digits").spec, study.data_dir)
    assert (prepared.num_classes, prepared.num_train + prepared.num_test) == (10, 1797)

    assert main(["run", str(tmp_path), "--cluster", "slurm", "--poll", "1", "--no-analyze"]) == 0
    record = read_records(study)[0]
    assert record["cluster"] == "slurm"
    digits = read_results(tmp_path / "results.h5").datasets["digits"]
    assert sorted(zip(digits.columns["arch_id"], digits.columns["seed"], strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    array = record["arrays"][0]["job_id"]
    assert {j.partition("_")[0] for j in digits.columns["job_id"]} == {array}
    assert set(digits.columns["status"]) == {"done"}
