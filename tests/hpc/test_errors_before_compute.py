"""Bad input is one clear line before any compute: nothing sampled, prepared or trained. A dry
run checks what it can without reading an image (paths, a folder's classes and images counted
by file names) and says what it could not; CPU studies speak of CPU-hours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from hpc.cli import main
from hpc.study.datasets import dataset_sizes
from hpc.study.spec import load_study
from loaders.registry import DatasetError, get_dataset

STUDY = """\
[study]
architectures = 2

[design]
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 1

[cluster]
gpus = 0
cpus = 2

[datasets.digits]
"""


def _folder(root: Path, classes: dict[str, tuple[int, int]]) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png: real digit scans, 8x8 gray."""
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    k = 0
    for name, (train, val) in classes.items():
        for split, count in (("train", train), ("val", val)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(images[k]).save(folder / f"{i}.png")
                k += 1
    return root


def _study(tmp_path: Path, extra: str = "", text: str = STUDY) -> Path:
    folder = tmp_path / "study"
    folder.mkdir(parents=True)
    (folder / "study.toml").write_text(text + extra)
    return folder


def _untouched(study: Path) -> None:
    """Nothing sampled, prepared or trained."""
    assert sorted(p.name for p in study.iterdir()) == ["study.toml"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_subset_of_one_class_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(DatasetError, match="k=1: a classifier needs at least 2 classes"):
        get_dataset("fashion_mnist_k1")
    study = _study(tmp_path, "\n[datasets.fashion_mnist]\n[datasets.fashion_mnist_k1]\n")
    assert main(["run", str(study)]) == 2
    assert "k=1: a classifier needs at least 2 classes" in _error(capsys)
    _untouched(study)


def test_a_folder_dataset_of_one_class_is_refused_by_run_and_the_dry_run(tmp_path, capsys):
    root = _folder(tmp_path / "mine", {"cat": (4, 2)})
    study = _study(tmp_path, f'\n[datasets.mine]\nsource = "folder"\npath = "{root}"\n')
    for verb in (["run"], ["launch", "--dry-run"]):
        assert main([verb[0], str(study), *verb[1:]]) == 2
        err = capsys.readouterr().err
        assert f"{root / 'train'} holds one class folder (cat)" in err
        assert "a classifier needs at least 2 classes" in err
        _untouched(study)


def test_run_with_no_workers_stops_before_sampling(tmp_path, capsys):
    study = _study(tmp_path)
    assert main(["run", str(study), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1 (workers at once), got 0" in _error(capsys)
    _untouched(study)


def test_a_folder_that_does_not_exist_stops_run_before_any_dataset_is_prepared(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    study = _study(tmp_path, f'\n[datasets.mine]\nsource = "folder"\npath = "{missing}"\n')
    assert main(["run", str(study)]) == 2
    assert f"folder {missing} does not exist" in _error(capsys)
    _untouched(study)  # digits, declared first, was not prepared either


def test_the_dry_run_checks_sources_and_says_what_it_could_not(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    study = _study(tmp_path, f'\n[datasets.mine]\nsource = "folder"\npath = "{missing}"\n')
    assert main(["launch", str(study), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "4 cells, 0 finished, 0 queued or running, 4 to run" in captured.out  # the plan
    assert f"folder {missing} does not exist" in captured.err
    _untouched(study)
    _folder(missing, {"cat": (5, 3), "dog": (4, 2)})
    assert main(["launch", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "not checked by a dry run: the images of digits, mine" in out
    assert "`anysweep prepare` checks them" in out
    assert "image counts unknown" not in out  # the folder was counted
    _untouched(study)


def test_a_folder_datasets_images_are_counted_by_their_names(tmp_path):
    root = _folder(tmp_path / "mine", {"cat": (5, 3), "dog": (4, 2), "owl": (6, 1)})
    extra = f'\n[datasets.mine]\nsource = "folder"\npath = "{root}"\nmax_train = 12\n'
    extra += "\n[datasets.mine_k2]\n\n[datasets.mine_n6]\n"
    study = load_study(_study(tmp_path, extra))
    assert dataset_sizes(study.dataset("mine")) == (12, 6, 3, False)  # 15 capped at 12
    assert dataset_sizes(study.dataset("mine_k2")) == (8, 4, 2, False)  # 2/3, rounded up
    assert dataset_sizes(study.dataset("mine_n6")) == (6, 6, 3, False)


def test_a_cpu_study_speaks_of_cpu_hours(tmp_path, capsys):
    study = _study(tmp_path)
    assert main(["launch", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert " CPU-hours" in out and "GPU-hours" not in out
    gpu = _study(tmp_path / "gpu", text=STUDY.replace("gpus = 0", "gpus = 1"))
    assert main(["launch", str(gpu), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert " GPU-hours" in out and "CPU-hours" not in out


def test_collect_before_sample_says_so_in_one_line(tmp_path, capsys):
    study = _study(tmp_path)
    assert main(["collect", str(study)]) == 2
    err = _error(capsys)
    assert "no architectures sampled yet" in err and f"anysweep sample {study}" in err
    assert "holds 0 of" not in err


def test_a_negative_epoch_count_is_one_error_without_knock_on_ones(tmp_path, capsys):
    study = _study(tmp_path, text=STUDY.replace("epochs = 1", "epochs = -2"))
    assert main(["launch", str(study), "--dry-run"]) == 2
    err = _error(capsys)
    assert "epochs must be >= 1, got -2" in err and "warmup" not in err
