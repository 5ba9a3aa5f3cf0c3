"""Stale cells: results trained with what study.toml no longer says. status counts and lists
them with the keys that changed; launch and run refuse while they exist and say the two ways
on; --retrain-stale keeps their results under jobs/stale/ and trains them again; collect
keeps them out of what analysis reads; speed-only keys never make a cell stale; and cells
from before fingerprints are fingerprinted from what they and their manifests recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.schema import CellResult, read_results, write_cell
from hpc.cli import main
from hpc.scheduling.launch import StaleCellsError, launch
from hpc.scheduling.run import run_study
from hpc.scheduling.status import format_status, study_status
from hpc.study import packs
from hpc.study.collect import collect
from hpc.study.layout import cell_paths
from hpc.study.population import dataset_arch, sample_architectures
from hpc.study.results import standing
from hpc.study.spec import load_study
from tests.hpc.conftest import append_result

STUDY = """\
[study]
architectures = 3
seeds = 1

[design]
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 2
num_workers = 2

[datasets.digits]
max_train = 500
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    sample_architectures(study)
    for arch_id in range(3):
        append_result(study, "digits", arch_id, 0, top1_err=10.0 + arch_id, epochs=2)
    return study


def _changed(study, old: str, new: str):
    text = (study.root / "study.toml").read_text()
    assert old in text
    (study.root / "study.toml").write_text(text.replace(old, new))
    return load_study(study.root)


def test_a_speed_only_change_makes_no_cell_stale(study) -> None:
    faster = _changed(study, "num_workers = 2", "num_workers = 8")
    assert study_status(faster).counts["digits"] == {
        "done": 3,
        "running": 0,
        "queued": 0,
        "failed": 0,
        "diverged": 0,
        "stale": 0,
        "missing": 0,
    }


def test_status_counts_and_lists_stale_cells_with_the_keys_that_changed(study) -> None:
    longer = _changed(study, "epochs = 2", "epochs = 3")
    status = study_status(longer, limit=2)
    assert status.counts["digits"]["stale"] == 3 and status.counts["digits"]["done"] == 0
    assert status.stale_total == 3
    assert status.stale == [
        {
            "dataset": "digits",
            "cells": 3,
            "changes": ["recipe.epochs 2 then, 3 now"],
            "listed": ["digits/0-s0", "digits/1-s0"],
        }
    ]
    text = format_status(status)
    assert "stale cells (3): trained with what study.toml no longer says" in text
    assert "  digits: 3 cells, recipe.epochs 2 then, 3 now" in text
    assert "    digits/0-s0, digits/1-s0 ... and 1 more" in text
    assert "--retrain-stale" in text


def test_launch_refuses_naming_the_keys_and_the_two_ways_on(study, capsys) -> None:
    fewer = _changed(study, "max_train = 500", "max_train = 300")
    with pytest.raises(StaleCellsError) as refused:
        launch(fewer, cluster="local")
    message = str(refused.value)
    assert message.startswith("3 cell(s) were trained with what study.toml no longer says")
    assert "dataset.max_train 500 then, 300 now" in message
    assert "revert study.toml" in message and "`anysweep launch --retrain-stale`" in message
    assert main(["launch", str(study.root), "--cluster", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset.max_train 500 then, 300 now" in err
    assert not list((study.root / "jobs").glob("L*"))  # nothing submitted


def test_a_dry_run_says_what_launch_would_refuse(study, capsys) -> None:
    _changed(study, "epochs = 2", "epochs = 3")
    assert main(["launch", str(study.root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 cells, 0 finished, 0 queued or running, 3 to run" in out
    assert "note: 3 cell(s) were trained with what study.toml no longer says" in out


def test_run_refuses_before_training_anything(study, capsys) -> None:
    _changed(study, "epochs = 2", "epochs = 3")
    assert main(["run", str(study.root), "--no-analyze"]) == 2
    err = capsys.readouterr().err
    assert "recipe.epochs 2 then, 3 now" in err and "`anysweep run --retrain-stale`" in err
    assert not (study.root / "data").exists() and not list((study.root / "jobs").glob("L*"))
    with pytest.raises(StaleCellsError):
        run_study(study.root, progress=False, analyze=False)


def test_retrain_stale_keeps_the_old_results_under_jobs_and_plans_the_cells(study) -> None:
    longer = _changed(study, "epochs = 2", "epochs = 3")
    launched = launch(longer, cluster="local", dry_run=True, retrain_stale=True)
    assert len(launched.plan.missing) == 3
    assert "3 stale cells would be set aside" in launched.plan.notes[-1]
    with pytest.raises(FileNotFoundError, match="datasets not prepared yet: digits"):
        launch(longer, cluster="local", retrain_stale=True)  # set aside, then asks for data
    [kept] = (study.root / "jobs" / "stale").glob("*/digits.pack")
    assert sorted(s.result.arch_id for s in packs.stored(kept)) == [0, 1, 2]
    now = standing(longer)
    assert len(now.index) == 0 and int(now.outcomes.stale.sum()) == 0


def test_collect_keeps_stale_cells_apart_from_what_analysis_reads(study) -> None:
    append_result(study, "digits", 1, 0, task="T0002.test.0", top1_err=5.0)  # retrained
    smaller = _changed(study, "max_train = 500", "max_train = 400")
    append_result(smaller, "digits", 1, 0, task="T0003.test.0", top1_err=7.0)
    collected = collect(smaller)
    assert (collected.cells, collected.stale) == (1, 2)
    results = read_results(study.root / "results.h5")
    digits = results.datasets["digits"]
    assert (list(digits.columns["arch_id"]), list(digits.columns["top1_err"])) == ([1], [7.0])
    apart = results.stale["digits"]
    assert (list(apart.columns["arch_id"]), list(apart.columns["top1_err"])) == (
        [0, 2],
        [10.0, 12.0],
    )
    assert json.loads(apart.columns["spec"][0])["max_train"] == 500


def test_an_architecture_built_otherwise_makes_its_cells_stale(study) -> None:
    text = (study.root / "study.toml").read_text()
    (study.root / "study.toml").write_text(
        text.replace("max_train = 500", 'max_train = 500\nstem = "imagenet"')
    )
    other = load_study(study.root)
    status = study_status(other)
    assert status.stale_total == 3
    assert status.stale[0]["changes"] == ["the architecture as built"]


def test_cells_from_before_fingerprints_are_fingerprinted_from_what_they_recorded(tmp_path) -> None:
    # A study from before packs: one-cell result files with their recipe, and the manifest
    # of the task that ran them with the dataset's spec; then max_train was lowered.
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    entry = study.dataset("digits")
    archs = sample_architectures(study).archs
    manifest = {
        "dataset": entry.spec.to_dict(),
        "cells": [
            {"arch_id": a, "seed": 0, "arch": dataset_arch(archs[a], entry).to_dict()}
            for a in range(2)
        ],
    }
    path = tmp_path / "jobs" / "L0001" / "digits-0" / "0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    for arch_id in range(2):
        write_cell(
            cell_paths(tmp_path, "digits", arch_id, 0).legacy_result,
            CellResult("digits", arch_id, 0, "done", recipe=entry.recipe.to_json()),
        )
    assert study_status(study).counts["digits"]["done"] == 2
    fewer = _changed(study, "max_train = 500", "max_train = 300")
    status = study_status(fewer)
    assert (status.counts["digits"]["stale"], status.counts["digits"]["missing"]) == (2, 1)
    assert status.stale[0]["changes"] == ["dataset.max_train 500 then, 300 now"]
