"""Folder datasets: matching classes in train/ and val/, counting by file names, what a folder
may hold (extensions, other files, channels, sizes) and the options prepared.json records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from loaders.prepare import manifest_path, open_prepared, prepare
from loaders.registry import DatasetError, get_dataset
from loaders.sources import count_folder, load_source


def tree(root, elpv_images, counts, name="{i}.png", mode="L"):
    """root/<class>/<name> for (class, count) pairs; returns root."""
    for cls, count in counts:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(elpv_images[i]).convert(mode).save(root / cls / name.format(i=i))
    return root


def split_tree(root, elpv_images, train, val):
    tree(root / "train", elpv_images, train)
    tree(root / "val", elpv_images, val)
    return root


def folder(root, **options):
    return get_dataset("mine", source="folder", path=str(root), **options)


def test_a_class_missing_from_val_is_refused_naming_it(tmp_path, elpv_images):
    root = split_tree(tmp_path, elpv_images, [("a", 2), ("b", 2), ("c", 2)], [("a", 1), ("b", 1)])
    with pytest.raises(DatasetError, match=r"val: training classes \['c'\] have no images here"):
        load_source(folder(root))


def test_a_class_with_an_empty_val_folder_is_refused_naming_it(tmp_path, elpv_images):
    root = split_tree(tmp_path, elpv_images, [("a", 2), ("b", 2)], [("a", 1)])
    (root / "val" / "b").mkdir()
    with pytest.raises(DatasetError, match=r"training classes \['b'\] have no images here"):
        load_source(folder(root))


def test_an_extra_class_in_val_is_refused_naming_it(tmp_path, elpv_images):
    root = split_tree(tmp_path, elpv_images, [("a", 2), ("b", 2)], [("a", 1), ("b", 1), ("z", 1)])
    with pytest.raises(DatasetError, match=r"class folders \['z'\] have no counterpart"):
        load_source(folder(root))


def test_count_folder_counts_train_and_val_by_file_names(tmp_path, elpv_images):
    root = split_tree(tmp_path, elpv_images, [("a", 3), ("b", 2)], [("a", 2), ("b", 1)])
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    assert count_folder(folder(root)) == (5, 3, 2)


def test_count_folder_splits_one_tree_as_prepare_does(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 10), ("b", 5), ("c", 3)])
    spec = folder(root, test_fraction=0.3)
    data = load_source(spec)
    assert count_folder(spec) == (len(data.train), len(data.test), 3) == (12, 6, 3)


def test_count_folder_on_a_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"folder .*nowhere does not exist"):
        count_folder(folder(tmp_path / "nowhere"))


def test_extensions_are_matched_in_any_case_and_other_files_are_ignored(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 2), ("b", 2)], name="{i}.PNG")
    tree(tmp_path, elpv_images, [("a", 1)], name="x{i}.jpeg")
    (root / "a" / "labels.csv").write_text("1,2\n")
    (root / "b" / "Thumbs.db").write_bytes(b"\0\1")
    data = load_source(folder(root, test_fraction=0.5))
    assert len(data.train) + len(data.test) == 5


def test_images_in_subfolders_of_a_class_belong_to_it(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 2), ("b", 2), ("b/night", 2)])
    data = load_source(folder(root, test_fraction=0.5))
    assert data.class_names == ("a", "b")
    assert np.bincount(np.concatenate([data.train.labels, data.test.labels])).tolist() == [2, 4]


def test_one_colour_image_makes_the_dataset_three_channels(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 2), ("b", 1)])
    tree(tmp_path, elpv_images, [("b", 1)], name="rgb{i}.png", mode="RGB")
    data = load_source(folder(root, test_fraction=0.5))
    assert data.channels == 3
    assert {data.train.image(i).shape[2] for i in range(len(data.train))} == {3}


def test_images_of_mixed_sizes_are_squared_to_the_resolution(tmp_path, elpv_images):
    for cls, shape in (("a", (300, 300)), ("b", (300, 120))):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(2):
            image = elpv_images[i][: shape[0], : shape[1]]
            Image.fromarray(image).save(tmp_path / "src" / cls / f"{i}.png")
    spec = folder(tmp_path / "src", resolution=24, backend="memory", test_fraction=0.5)
    prepared = prepare(spec, tmp_path / "data", progress=False)
    assert np.load(prepared.train_file).shape == (2, 24, 24, 1)


def test_a_folder_with_train_and_val_records_neither_binary_nor_test_fraction(
    tmp_path, elpv_images
):
    root = split_tree(tmp_path / "src", elpv_images, [("a", 2), ("b", 2)], [("a", 1), ("b", 1)])
    spec = folder(root, resolution=16, backend="memory")
    prepare(spec, tmp_path / "data", progress=False)
    options = json.loads(manifest_path(spec, tmp_path / "data").read_text())["options"]
    assert {"binary", "test_fraction"} & set(options) == set()
    assert options["split_seed"] == 0
    assert open_prepared(spec, tmp_path / "data").num_train == 4


def test_a_single_folder_records_test_fraction_and_a_change_of_it_is_refused(tmp_path, elpv_images):
    root = tree(tmp_path / "src", elpv_images, [("a", 4), ("b", 4)])
    prepare(folder(root, resolution=16, backend="memory"), tmp_path / "data", progress=False)
    options = json.loads(manifest_path(folder(root), tmp_path / "data").read_text())["options"]
    assert (options["test_fraction"], "binary" in options) == (0.2, False)
    with pytest.raises(DatasetError, match=r"other options .*'test_fraction': \(0.2, 0.5\)"):
        open_prepared(
            folder(root, resolution=16, backend="memory", test_fraction=0.5), tmp_path / "data"
        )


def test_an_rgba_image_is_read_as_rgb_without_its_alpha(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 2), ("b", 2)], mode="RGBA")
    data = load_source(folder(root, test_fraction=0.5))
    image = data.train.image(0)
    assert (data.channels, image.shape[2]) == (3, 3)
    source_index = int(data.train.files[0].rsplit("/", 1)[1].split(".")[0])
    assert np.array_equal(image[..., 0], elpv_images[source_index])


def test_a_hidden_folder_is_no_class(tmp_path, elpv_images):
    root = tree(tmp_path, elpv_images, [("a", 2), ("b", 2), (".cache", 2)])
    assert load_source(folder(root, test_fraction=0.5)).class_names == ("a", "b")
