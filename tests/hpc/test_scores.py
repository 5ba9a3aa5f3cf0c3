"""`anysweep score` on a real small study (offline digits): one file per (dataset, block of
architectures) holding every seed, each network the cell's own initialisation scored on the
first training batch of its seed; bad input refused before any compute; a rerun computes
nothing, an interrupted run resumes without recomputing a stored file, a grown study scores
only its new rows; collect puts the tables in results.h5 and open_results reads them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.frame import open_results
from analysis.schema import (
    ScoreTable,
    read_results,
    read_score_file,
    read_score_inputs,
    write_score_file,
)
from anynet import scores as zc
from hpc.cli import main
from hpc.scheduling import schedulers
from hpc.scheduling.schedulers import Tasks
from hpc.scheduling.scores import score_study
from hpc.study.collect import collect
from hpc.study.datasets import prepare_datasets
from hpc.study.population import load_population, sample_architectures
from hpc.study.recipe import Recipe
from hpc.study.scores import ScoreTask, score_inputs, store_scores
from hpc.study.spec import Study, load_study
from hpc.worker.scores import minibatches, score_task
from hpc.worker.train import CellRun, cell_seed
from loaders.pipelines import build_loaders
from loaders.prepare import open_prepared
from tests.hpc.conftest import append_result

ROOT = Path(__file__).resolve().parents[2]
STUDY = """\
[study]
architectures = 5
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

[scores]
minibatch_size = 32
architectures_per_file = 2

[datasets.digits]

[datasets.digits_k3]
"""
NAMES = zc.SCORES


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampled and prepared study folder; tests work on copies of it."""
    folder = tmp_path_factory.mktemp("prepared") / "study"
    folder.mkdir()
    (folder / "study.toml").write_text(STUDY)
    study = load_study(folder)
    sample_architectures(study)
    prepare_datasets(study, progress=False)
    return folder


def _copy(prepared: Path, tmp_path: Path, toml: str = STUDY) -> Study:
    folder = tmp_path / "study"
    shutil.copytree(prepared, folder)
    (folder / "study.toml").write_text(toml)
    return load_study(folder)


@pytest.fixture(scope="module")
def scored(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """The study, every score computed by `anysweep score` with two local processes."""
    study = _copy(prepared, tmp_path_factory.mktemp("scored"))
    assert main(["score", str(study.root), "--jobs", "2"]) == 0
    return study


def _stamps(study: Study) -> dict[str, tuple[int, int]]:
    """Every score file with its inode and modification time (a rewrite changes both)."""
    return {
        str(p.relative_to(study.root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in study.layout.scores.glob("*/*.h5")
    }


def test_score_writes_one_file_per_dataset_and_block_with_every_seed(scored: Study) -> None:
    assert sorted(_stamps(scored)) == [
        f"scores/{d}/{b}.h5" for d in ("digits", "digits_k3") for b in ("0-1", "2-3", "4-5")
    ]
    table = read_score_file(scored.layout.score_file("digits", 2, 3))
    assert (table.dataset, table.names, table.minibatch_size) == ("digits", NAMES, 32)
    assert list(zip(table.arch_ids.tolist(), table.seeds.tolist(), strict=True)) == [
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
    ]
    assert np.isfinite(table.values).all()


def test_score_files_record_their_inputs_for_the_fingerprint(scored: Study) -> None:
    inputs = read_score_inputs(scored.layout.score_file("digits_k3", 0, 1))
    entry = scored.dataset("digits_k3")
    assert inputs["dataset"] == json.loads(json.dumps(entry.spec.to_dict()))
    assert inputs["dataset"]["k"] == 3 and inputs["dataset"]["parent"] == "digits"
    assert inputs["recipe"] == {"resolution": 0, "augment": "auto"}
    assert (inputs["minibatch_size"], inputs["seeds"], inputs["stem"]) == (32, [0, 1], "")
    assert {k: v for k, v in inputs.items() if k != "seeds"} == score_inputs(scored, entry)


def test_each_network_is_its_cells_initialisation_on_its_seeds_first_training_batch(
    scored: Study,
) -> None:
    entry = scored.dataset("digits")
    arch = load_population(scored).archs[3]
    prepared = open_prepared(entry.spec, scored.data_dir)
    train, _ = build_loaders(prepared, batch_size=32, resolution=16, augment="auto")
    table = read_score_file(scored.layout.score_file("digits", 2, 3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the lanes ran
    try:
        _check_scores_of_arch_3(table, arch, train)
    finally:
        torch.set_num_threads(threads)


def _check_scores_of_arch_3(table: ScoreTable, arch, train) -> None:
    for seed in (0, 1):
        images, labels = next(iter(train.epoch(seed, 0)))
        images = images.contiguous()
        cell = CellRun(
            arch,
            Recipe(channels_last=False),  # the layout build_model gives, as the scores use
            seed=seed,
            num_classes=10,
            steps_per_epoch=1,
            init_seed=cell_seed("digits", 3, seed),
        )
        expected = {
            "naswot": zc.naswot(cell.model, images),
            "synflow": zc.synflow(cell.model, images),
            **zc.grad_norm_and_snip(cell.model, images, labels),
            "jacob_cov": zc.jacob_cov(cell.model, images),
        }
        row = int(np.flatnonzero((table.arch_ids == 3) & (table.seeds == seed))[0])
        for name, value in expected.items():
            assert table.column(name)[row] == pytest.approx(value, rel=1e-6), (name, seed)
        assert table.column("params")[row] == sum(p.numel() for p in cell.model.parameters())


def test_every_block_of_a_dataset_scores_on_the_same_minibatch(scored: Study) -> None:
    task = ScoreTask(
        scored.root,
        scored.data_dir,
        "digits",
        score_inputs(scored, scored.dataset("digits")),
        rows=((0, 0),),
        archs={},
        target=scored.layout.score_file("digits", 0, 1),
    )
    first = minibatches(task, [0, 1])[1]
    again = minibatches(task, [1, 0])[1]
    for seed in (0, 1):
        assert torch.equal(first[seed][0], again[seed][0])
        assert torch.equal(first[seed][1], again[seed][1])
    assert not torch.equal(first[0][0], first[1][0])
    assert first[0][0].shape == (32, 3, 16, 16)


def test_score_run_again_computes_nothing(scored: Study, capsys) -> None:
    before = _stamps(scored)
    assert main(["score", str(scored.root)]) == 0
    assert "nothing to score: every score of the study is stored" in capsys.readouterr().out
    assert _stamps(scored) == before


def test_a_scored_study_needs_no_prepared_data_to_say_so(
    scored: Study, tmp_path: Path, capsys
) -> None:
    study = _copy(scored.root, tmp_path)
    shutil.rmtree(study.data_dir)  # as `anysweep clean --betons` leaves a finished study
    assert main(["score", str(study.root)]) == 0
    assert "nothing to score" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "cifar10"], "dataset 'cifar10' is not in"),
        (["--jobs", "0"], "jobs must be >= 1, got 0"),
        (["--cluster", "slurm"], "--cluster slurm needs SLURM_CONF"),
    ],
)
def test_bad_input_is_one_line_before_any_compute(
    prepared: Path, tmp_path: Path, capsys, monkeypatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    study = _copy(prepared, tmp_path)
    assert main(["score", str(study.root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anysweep score: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not study.layout.scores.exists() and not study.layout.jobs.exists()


def test_sbatch_runs_no_score_tasks_and_says_which_schedulers_do(scored: Study) -> None:
    tasks = Tasks(scored, "Z0009", (), score_task)
    with pytest.raises(ValueError, match="cannot run score tasks; valid: local, slurm"):
        schedulers.get("sbatch").submit_tasks(tasks)
    assert not scored.layout.record_dir("Z0009").exists()


def test_a_study_not_sampled_or_not_prepared_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "study.toml").write_text(STUDY)
    assert main(["score", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no architectures sampled yet" in err and "run `anysweep sample" in err
    sample_architectures(load_study(tmp_path))
    assert main(["score", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "datasets not prepared yet: digits, digits_k3; run `anysweep prepare" in err
    assert not (tmp_path / "scores").exists()


def test_an_interrupted_score_resumes_without_recomputing_a_stored_file(
    prepared: Path, tmp_path: Path
) -> None:
    # One architecture per file: ten tasks, so Ctrl-C lands while some are left.
    study = _copy(
        prepared,
        tmp_path,
        STUDY.replace("architectures_per_file = 2", "architectures_per_file = 1"),
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "hpc.cli", "score", str(study.root), "--jobs", "1"]
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while len(_stamps(study)) < 2:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    stored = _stamps(study)
    assert 2 <= len(stored) < 10
    kept = {p: read_score_file(study.root / p) for p in stored}

    run = score_study(load_study(study.root), jobs=2, progress=False)
    assert (run.planned, run.scored, run.unscored) == (
        20 - 2 * len(stored),
        20 - 2 * len(stored),
        (),
    )
    after = _stamps(study)
    assert len(after) == 10
    assert {p: after[p] for p in stored} == stored
    for path, table in kept.items():
        assert np.array_equal(read_score_file(study.root / path).values, table.values)


def test_a_grown_study_scores_only_its_new_architectures_and_seeds(
    scored: Study, tmp_path: Path
) -> None:
    study = _copy(scored.root, tmp_path)
    before = {p: read_score_file(study.root / p) for p in _stamps(study)}
    grown = STUDY.replace("architectures = 5", "architectures = 6").replace(
        "seeds = 2", "seeds = 3"
    )
    (study.root / "study.toml").write_text(grown)
    study = load_study(study.root)
    sample_architectures(study)
    run = score_study(study, jobs=2, progress=False)
    assert run.planned == 2 * (6 * 3 - 5 * 2)  # two datasets
    for path, old in before.items():
        new = read_score_file(study.root / path)
        rows = {(a, s): v for a, s, v in zip(new.arch_ids, new.seeds, new.values, strict=True)}
        for a, s, v in zip(old.arch_ids, old.seeds, old.values, strict=True):
            assert np.array_equal(rows[(a, s)], v)
    last = read_score_file(study.layout.score_file("digits", 4, 5))
    assert sorted(zip(last.arch_ids.tolist(), last.seeds.tolist(), strict=True)) == [
        (a, s) for a in (4, 5) for s in range(3)
    ]


def test_a_file_made_from_other_inputs_is_scored_again(scored: Study, tmp_path: Path) -> None:
    study = _copy(
        scored.root, tmp_path, STUDY.replace("minibatch_size = 32", "minibatch_size = 16")
    )
    run = score_study(study, names=["digits_k3"], jobs=2, progress=False)
    assert (run.planned, run.scored) == (10, 10)
    for block in ((0, 1), (2, 3), (4, 5)):
        table = read_score_file(study.layout.score_file("digits_k3", *block))
        assert table.minibatch_size == 16
        assert (
            read_score_inputs(study.layout.score_file("digits_k3", *block))["minibatch_size"] == 16
        )
    assert read_score_file(study.layout.score_file("digits", 0, 1)).minibatch_size == 32


def _cells(study: Study) -> None:
    for dataset in ("digits", "digits_k3"):
        for arch_id in range(5):
            for seed in (0, 1):
                append_result(
                    study,
                    dataset,
                    arch_id,
                    seed,
                    "done",
                    top1_err=10.0 + arch_id,
                    epochs=1,
                    curves={"test_top1_err": np.array([10.0 + arch_id])},
                )


def test_collect_puts_every_score_table_in_results_and_open_results_reads_it(
    scored: Study, tmp_path: Path
) -> None:
    study = _copy(scored.root, tmp_path)
    _cells(study)
    collect(study)
    results = read_results(study.layout.results_file)
    assert sorted(results.scores) == ["digits", "digits_k3"]
    for dataset in ("digits", "digits_k3"):
        table = results.scores[dataset]
        assert table.arch_ids.tolist() == [a for a in range(5) for _ in range(2)]
        assert table.seeds.tolist() == [0, 1] * 5
        for block in ((0, 1), (2, 3), (4, 5)):
            part = read_score_file(study.layout.score_file(dataset, *block))
            rows = np.isin(table.arch_ids, part.arch_ids)
            assert np.array_equal(table.values[rows], part.values)
    opened = open_results(study.layout.results_file).score_tables
    assert opened["digits_k3"].minibatch_size == 32
    assert np.array_equal(opened["digits"].values, results.scores["digits"].values)


def test_collect_writes_again_when_a_score_file_changes(scored: Study, tmp_path: Path) -> None:
    study = _copy(scored.root, tmp_path)
    assert collect(study).written and not collect(study).written
    path = study.layout.score_file("digits", 4, 5)
    path.unlink()
    assert collect(study).written
    table = read_results(study.layout.results_file).scores["digits"]
    assert sorted(set(table.arch_ids.tolist())) == [0, 1, 2, 3]


def test_store_scores_keeps_the_rows_a_block_file_holds_from_the_same_inputs(
    tmp_path: Path,
) -> None:
    def table(rows: list[tuple[int, int]], value: float) -> ScoreTable:
        return ScoreTable(
            "digits",
            np.array([a for a, _ in rows]),
            ("naswot",),
            np.full((len(rows), 1), value),
            minibatch_size=32,
            seeds=np.array([s for _, s in rows]),
        )

    target = tmp_path / "0-1.h5"
    inputs = {"minibatch_size": 32}
    task = ScoreTask(tmp_path, tmp_path, "digits", inputs, ((0, 1), (1, 1)), {}, target)
    write_score_file(target, table([(1, 0), (0, 0)], 1.0), {**inputs, "seeds": [0]})
    store_scores(task, table([(0, 1), (1, 1)], 2.0))
    stored = read_score_file(target)
    assert list(
        zip(stored.arch_ids.tolist(), stored.seeds.tolist(), stored.values[:, 0], strict=True)
    ) == [
        (0, 0, 1.0),
        (0, 1, 2.0),
        (1, 0, 1.0),
        (1, 1, 2.0),
    ]
    assert read_score_inputs(target) == {"minibatch_size": 32, "seeds": [0, 1]}
    other = ScoreTask(tmp_path, tmp_path, "digits", {"minibatch_size": 16}, ((0, 0),), {}, target)
    store_scores(other, table([(0, 0)], 3.0))
    assert read_score_file(target).arch_ids.tolist() == [0]
