"""Bad input fails in prepare, before anything is written or trained, with an error that
names the file and the problem."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from loaders.prepare import open_prepared, prepare
from loaders.registry import DatasetError, get_dataset


def class_tree(root, elpv_images, counts=(("a", 4), ("b", 4))):
    for name, count in counts:
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(elpv_images[i]).save(root / name / f"{i}.png")
    return root


def folder_spec(root, **options):
    return get_dataset(
        "cells",
        source="folder",
        path=str(root),
        resolution=32,
        backend="memory",
        test_fraction=0.25,
        **options,
    )


def test_an_unreadable_image_is_named_and_nothing_is_written(tmp_path, elpv_images):
    root = class_tree(tmp_path / "src", elpv_images)
    (root / "b" / "2.png").write_bytes(b"this is not an image")
    with pytest.raises(
        DatasetError, match=r"b/2.png: not a readable image \(cannot identify image file"
    ):
        prepare(folder_spec(root), tmp_path / "data", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_truncated_image_is_named(tmp_path, elpv_images):
    root = class_tree(tmp_path / "src", elpv_images)
    path = root / "a" / "1.png"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetError, match=r"a/1.png: cannot read the image \(.*truncated"):
        prepare(folder_spec(root), tmp_path / "data", progress=False)


def test_an_empty_class_folder_is_named(tmp_path, elpv_images):
    root = class_tree(tmp_path / "src", elpv_images, counts=(("a", 4), ("b", 0)))
    with pytest.raises(DatasetError, match=r"src/b: the class folder holds no images"):
        prepare(folder_spec(root), tmp_path / "data", progress=False)


def test_a_folder_that_does_not_exist_says_what_is_expected(tmp_path):
    with pytest.raises(
        DatasetError, match=r"folder .*/missing does not exist; expected PATH/<class>/<image>"
    ):
        prepare(folder_spec(tmp_path / "missing"), tmp_path / "data", progress=False)


def test_a_label_outside_the_classes_is_named(tmp_path, fashion_images):
    x, y = fashion_images
    y = y.copy()
    y[7] = 10
    arrays = {
        "x_train": x[:50],
        "y_train": y[:50],
        "x_test": x[50:60],
        "y_test": y[50:60],
        "class_names": np.array([f"c{i}" for i in range(10)]),
    }
    spec = get_dataset("mine", source="arrays", backend="memory", resolution=28)
    with pytest.raises(
        DatasetError,
        match=r"arrays given to prepare sample 7: label 10 is outside the 10 classes 0..9",
    ):
        prepare(spec, tmp_path, progress=False, arrays=arrays)
    assert list(tmp_path.iterdir()) == []


def test_a_class_count_other_than_declared_is_refused(tmp_path, elpv_images):
    root = class_tree(tmp_path / "src", elpv_images)
    with pytest.raises(
        DatasetError, match=r"should have 5 classes but its source has 2: \['a', 'b'\]"
    ):
        prepare(folder_spec(root, num_classes=5), tmp_path / "data", progress=False)


def test_opening_before_prepare_says_to_prepare(tmp_path):
    with pytest.raises(
        DatasetError, match="dataset 'digits' is not prepared in .*run prepare first"
    ):
        open_prepared(get_dataset("digits"), tmp_path)


def test_opening_with_other_options_names_them(tmp_path):
    prepare(get_dataset("digits", max_train=200, max_test=50), tmp_path, progress=False)
    with pytest.raises(
        DatasetError,
        match=r"prepared with other options \(prepared, asked\): \{'resolution': \(16, 24\)\}",
    ):
        open_prepared(get_dataset("digits", max_train=200, max_test=50, resolution=24), tmp_path)


def test_a_missing_prepared_file_is_named(tmp_path):
    prepared = prepare(get_dataset("digits", max_train=200, max_test=50), tmp_path, progress=False)
    prepared.test_file.unlink()
    with pytest.raises(DatasetError, match=r"digits.test.npy: missing; run prepare again"):
        open_prepared(prepared.spec, tmp_path)


def test_prepare_replaces_a_damaged_file(tmp_path):
    prepared = prepare(get_dataset("digits", max_train=200, max_test=50), tmp_path, progress=False)
    with open(prepared.test_file, "r+b") as f:
        f.truncate(100)
    again = prepare(prepared.spec, tmp_path, progress=False)
    assert np.load(again.test_file).shape == (50, 16, 16, 1)
