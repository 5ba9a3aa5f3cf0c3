"""Image-tree sources (ImageNet layout, class folders) and the real offline datasets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from loaders.formats import safe_unpickle
from loaders.registry import DatasetError, dataset_info, get_dataset
from loaders.sources import load_source, source_fingerprint


def test_imagenet_reads_synset_folders_and_names(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path, train_per_class=4, val_per_class=2)
    data = load_source(get_dataset("imagenet", path=str(root)))
    assert data.class_names == ("tench", "goldfish", "great white shark")
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.train.files[4].endswith("train/n01443537/n01443537_0.JPEG")
    image = data.train.image(0)
    assert (image.shape, image.dtype) == ((60, 80, 3), np.uint8)


def test_imagenet_names_classes_by_synset_without_the_mapping(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path)
    (root / "LOC_synset_mapping.txt").unlink()
    names = load_source(get_dataset("imagenet", path=str(root))).class_names
    assert names == ("n01440764", "n01443537", "n01484850")


def test_imagenet_reads_a_flat_val_folder_with_its_solution_file(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path, val_per_class=3, flat_val=True)
    data = load_source(get_dataset("imagenet", path=str(root)))
    assert data.test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_imagenet_without_val_says_what_is_expected(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path)
    for f in (root / "val").rglob("*.JPEG"):
        f.unlink()
    for d in sorted((root / "val").iterdir(), reverse=True):
        d.rmdir()
    (root / "val").rmdir()
    with pytest.raises(
        DatasetError, match=r"val does not exist; expected PATH/train/<synset>/\*.JPEG"
    ):
        load_source(get_dataset("imagenet", path=str(root)))


def test_imagenet_val_with_an_unknown_synset_is_refused(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path)
    (root / "val" / "n09999999").mkdir()
    with pytest.raises(DatasetError, match=r"class folders \['n09999999'\] have no counterpart"):
        load_source(get_dataset("imagenet", path=str(root)))


def test_a_folder_with_its_own_split_keeps_it(tmp_path, elpv_images):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("cracked", "intact"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(elpv_images[i]).save(tmp_path / split / name / f"{i}.png")
    data = load_source(get_dataset("mine", source="folder", path=str(tmp_path)))
    assert data.class_names == ("cracked", "intact")
    assert (len(data.train), len(data.test), data.channels) == (6, 4, 1)
    assert np.array_equal(data.train.image(0)[..., 0], elpv_images[0])


def test_a_folder_without_a_split_is_split_by_seed_and_class(tmp_path, elpv_images):
    for c, count in (("a", 10), ("b", 5)):
        (tmp_path / c).mkdir()
        for i in range(count):
            Image.fromarray(elpv_images[i]).convert("RGB").save(tmp_path / c / f"{i}.png")
    data = load_source(get_dataset("mine", source="folder", path=str(tmp_path), test_fraction=0.2))
    assert np.bincount(data.test.labels).tolist() == [2, 1]
    assert np.bincount(data.train.labels).tolist() == [8, 4]
    assert data.channels == 3  # the files' mode decides: these were saved as RGB
    assert set(data.train.files).isdisjoint(data.test.files)


def test_the_fingerprint_changes_when_a_file_changes(tmp_path, elpv_images):
    (tmp_path / "a").mkdir()
    for i in range(2):
        Image.fromarray(elpv_images[i]).save(tmp_path / "a" / f"{i}.png")
    spec = get_dataset("mine", source="folder", path=str(tmp_path))
    before = source_fingerprint(spec)
    assert source_fingerprint(spec) == before
    Image.fromarray(elpv_images[5]).save(tmp_path / "a" / "1.png")
    assert source_fingerprint(spec) != before


@pytest.mark.parametrize("name", ["fashion_mnist", "animal_mnist", "elpv", "digits"])
def test_offline_datasets_match_their_registry_facts(name):
    info = dataset_info(name)
    data = load_source(info.spec)
    assert (len(data.train), len(data.test)) == (info.num_train, info.num_test)
    assert len(data.class_names) == info.spec.num_classes
    assert set(np.unique(data.train.labels)) == set(range(info.spec.num_classes))
    assert data.channels == 1


def test_mnist_is_the_official_split_with_the_pickles_floats_times_256():
    from loaders.formats import packaged_files

    spec = get_dataset("mnist")
    (train, _), _, (test_x, _) = safe_unpickle(packaged_files(spec)[0])
    data = load_source(spec)
    assert (len(data.train), len(data.test), len(data.class_names)) == (60_000, 10_000, 10)
    assert np.array_equal(
        data.train.images[0, :, :, 0], np.rint(train[0] * 256).reshape(28, 28).astype(np.uint8)
    )
    assert np.array_equal(data.test.images[-1].ravel(), np.rint(test_x[-1] * 256).astype(np.uint8))


def test_digits_are_scaled_from_0_16_to_0_255():
    data = load_source(get_dataset("digits"))
    assert data.train.images.shape[1:] == (8, 8, 1)
    assert data.train.images.max() == 255
    assert set(np.unique(data.train.images)) <= {round(v * 255 / 16) for v in range(17)}


def test_elpv_has_a_four_class_option():
    data = load_source(get_dataset("elpv", binary=False))
    counts = np.bincount(data.train.labels) + np.bincount(data.test.labels)
    assert counts.tolist() == [1508, 295, 106, 715]


def test_elpv_binary_means_defect_probability_at_least_half():
    data = load_source(get_dataset("elpv"))
    counts = np.bincount(data.train.labels) + np.bincount(data.test.labels)
    assert counts.tolist() == [1508 + 295, 106 + 715]
