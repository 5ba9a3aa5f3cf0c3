"""benchmarks/scale.py's study at 6,000 cells (50 architectures x 40 datasets x 3 seeds):
what each verb prints and writes at that size (its speed is the benchmark's business). The
launch is `anysweep sbatch`; squeue is the benchmark's script on PATH, which counts its calls."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analysis.schema import read_results
from benchmarks.scale import (
    DATASETS,
    NEW_CELLS,
    count_files,
    fake_clients,
    make_study,
    squeue_calls,
    write_cells,
    write_held,
    write_squeue,
)
from hpc.cli import main
from hpc.scheduling.records import read_records
from hpc.study.spec import load_study

CELLS = 6_000


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory):
    """The study, launched (sbatch) and its cells written but the last NEW_CELLS; the fake
    clients' folder; what the cells were made to say."""
    work = tmp_path_factory.mktemp("scale")
    study = make_study(work / "study", CELLS)
    bin_dir = work / "bin"
    env = fake_clients(bin_dir)
    patch = pytest.MonkeyPatch()
    patch.setenv("PATH", env["PATH"])
    patch.delenv("SLURM_CONF", raising=False)
    yield study, bin_dir
    patch.undo()


def _running_tasks_holding(bin_dir, record, made) -> int:
    """Tasks squeue says run that still hold cells (the held-back ones)."""
    states = {}
    for line in (bin_dir / "squeue.txt").read_text().splitlines():
        job, name, state = line.split("|")
        states[(name, int(job.partition("_")[2]))] = state
    names = {a.label: a.job_name for a in record.arrays}
    held = [pack.split(".")[1:] for _, pack, _ in made.held]
    return sum(states[(names[label], int(i))] == "RUNNING" for label, i in held)


def _run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_a_study_of_6000_cells_through_every_verb(scaled, capsys) -> None:
    study, bin_dir = scaled
    out = _run(capsys, "launch", str(study), "--dry-run")
    assert f"study scale: {CELLS:,} cells, 0 finished, 0 queued or running, {CELLS:,} to run" in out

    out = _run(capsys, "sbatch", str(study))
    [record] = read_records(load_study(study))
    assert sum(len(a.cells) for a in record.arrays) == CELLS
    manifests = sorted(p.name for p in (study / "jobs" / record.id).glob("*-*.json"))
    assert manifests == sorted(f"{a.label}.json" for a in record.arrays)  # one per array
    assert out.count(".sbatch") == len(record.arrays)
    tasks = write_squeue(bin_dir, study)
    assert tasks == sum(len(a) for a in record.arrays)

    made = write_cells(study)
    assert made.written == CELLS - NEW_CELLS and made.stale > 0 and made.failed > 20
    calls = squeue_calls(bin_dir)
    out = _run(capsys, "status", str(study))
    assert squeue_calls(bin_dir) == calls + 1
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2 : 3 + len(DATASETS)]}
    total = [int(v) for v in rows["all"]]
    done, running, queued, failed, diverged, stale, missing, cells = total
    assert cells == CELLS and missing == 0
    assert (failed, diverged, stale) == (made.failed, made.diverged, made.stale)
    # Each running task with cells left runs one of them; the rest wait.
    assert running == _running_tasks_holding(bin_dir, record, made) == len(made.held)
    assert running + queued == NEW_CELLS
    assert f"failed cells ({made.failed:,}), by error:" in out
    assert f"  {made.failed:>7,}  RuntimeError: CUDA error: an illegal memory access" in out
    assert f"  20 of {made.failed:,} cells named; `anysweep status --limit 0`" in out
    assert f"stale cells ({made.stale:,}):" in out
    assert "digits_k2_s0: " in out and "recipe.epochs 9 then, 10 now" in out
    status = json.loads(_run(capsys, "status", str(study), "--json", "--limit", "5"))
    assert len(status["failed"]) == 5 and status["failed_total"] == made.failed
    assert status["failed_errors"] == [
        {"error": "RuntimeError: CUDA error: an illegal memory access", "cells": made.failed}
    ]
    assert sum(sum(row.values()) for row in status["counts"].values()) == CELLS

    out = _run(capsys, "collect", str(study))
    kept = CELLS - NEW_CELLS - made.stale
    assert re.search(
        rf"wrote .*results.h5 \({kept:,} cells, {CELLS - NEW_CELLS:,} records read", out
    )
    write_held(study, made)
    out = _run(capsys, "collect", str(study))
    assert (
        f"({kept + NEW_CELLS:,} cells, {NEW_CELLS:,} records read, {CELLS - NEW_CELLS:,} kept"
        in out
    )
    results = read_results(study / "results.h5")
    assert sum(len(t) for t in results.datasets.values()) == kept + NEW_CELLS
    assert sum(len(t) for t in results.stale.values()) == made.stale
    for table in results.datasets.values():
        pairs = list(zip(table.columns["arch_id"], table.columns["seed"], strict=True))
        assert pairs == sorted(set(pairs))  # each cell once, in order
    assert np.isfinite(results.datasets["digits"].columns["top1_err"]).any()

    before = count_files(study)
    _run(capsys, "clean", str(study))
    finished = made.written - made.failed
    assert count_files(study) <= before and count_files(study) / finished <= 1.1
