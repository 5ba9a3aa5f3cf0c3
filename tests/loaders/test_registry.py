"""The dataset registry and DatasetSpec: names, subsets, overrides, round-trips, planning facts."""

from __future__ import annotations

import json

import pytest

from loaders.registry import (
    DatasetError,
    DatasetSpec,
    dataset_info,
    dataset_names,
    get_dataset,
    parent_of,
)

PAPER = (
    "imagenet",
    "concrete_cracks",
    "powerline",
    "mlc2008",
    "ham10000",
    "insects",
    "natural_images",
    "cifar10",
    "cifar100",
)
OFFLINE = ("fashion_mnist", "mnist", "animal_mnist", "elpv", "digits")


def test_registry_holds_the_papers_and_the_offline_datasets():
    assert set(PAPER) | set(OFFLINE) == set(dataset_names())
    assert dataset_names(offline=True) == sorted(OFFLINE)


def test_a_spec_round_trips_through_a_plain_json_dict():
    spec = get_dataset("imagenet_k10", path="/data/in", max_train=5000)
    data = spec.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert None not in data.values()
    assert DatasetSpec.from_dict(data) == spec


def test_listed_classes_round_trip_as_a_tuple():
    spec = get_dataset("dogs", parent="imagenet", classes=["n02085620", 3])
    assert spec.classes == ("n02085620", 3)
    assert DatasetSpec.from_dict(spec.to_dict()).classes == ("n02085620", 3)


def test_a_subset_name_gives_parent_k_and_seed():
    spec = get_dataset("fashion_mnist_k5_s3")
    assert (spec.parent, spec.k, spec.subset_seed, spec.num_classes) == ("fashion_mnist", 5, 3, 5)
    assert (spec.source, spec.resolution) == ("idx", 28)


def test_a_subset_by_listed_classes_counts_them():
    spec = get_dataset("cifar10_pets", parent="cifar10", classes=[3, 5])
    assert (spec.k, spec.num_classes, spec.classes) == (2, 2, (3, 5))


def test_the_parent_spec_of_a_subset_keeps_its_options():
    spec = get_dataset("imagenet_k100", path="/x", resolution=128)
    assert spec.parent_spec() == get_dataset("imagenet", path="/x", resolution=128)


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown dataset 'imagenette'.*'cifar10'.*_k<k>"):
        get_dataset("imagenette")


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dataset options \['resolutoin'\].*'resolution'"):
        get_dataset("cifar10", resolutoin=64)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown DatasetSpec keys \['colour'\]"):
        DatasetSpec.from_dict({"name": "x", "source": "folder", "colour": 1})


def test_a_bad_choice_names_the_valid_ones():
    with pytest.raises(
        DatasetError, match=r"unknown backend 'dali'; valid backends: \['auto', 'ffcv', 'memory'\]"
    ):
        get_dataset("cifar10", backend="dali")
    with pytest.raises(DatasetError, match="unknown source 'hdf5'"):
        get_dataset("mine", source="hdf5", path="/x")


def test_k_above_the_parents_classes_is_refused():
    with pytest.raises(DatasetError, match="k=11 is more than the 10 classes of 'cifar10'"):
        get_dataset("cifar10_k11")


def test_a_subset_of_a_subset_is_refused():
    with pytest.raises(DatasetError, match="a subset of a subset"):
        get_dataset("x", parent="cifar100_k50", k=5)


def test_a_users_dataset_needs_a_source():
    spec = get_dataset("mine", source="folder", path="/data/mine", resolution=64)
    assert (spec.name, spec.source, spec.path, spec.resolution, spec.num_classes) == (
        "mine",
        "folder",
        "/data/mine",
        64,
        None,
    )


def test_names_must_be_lowercase_file_names():
    with pytest.raises(DatasetError, match="lowercase"):
        get_dataset("My Data", source="folder", path="/x")


def test_describe_gives_the_planning_facts():
    text = get_dataset("imagenet").describe()
    assert "classes: 1000" in text
    assert "1,281,167 train, 50,000 test" in text
    assert "train/<synset>" in text and "image-net.org" in text
    assert "official train/val split" in text


def test_describe_a_subset_says_which_classes():
    text = get_dataset("cifar100_k10_s2").describe()
    assert "subset of cifar100: 10 classes (seed 2), labels 0..9" in text
    assert "50,000 train, 10,000 test" in text


def test_datasets_without_a_split_say_how_they_are_split():
    for name in ("elpv", "animal_mnist", "concrete_cracks", "natural_images"):
        assert "seeded stratified split" in dataset_info(name).split


def test_parent_of_names_the_parent_of_a_derived_dataset_only():
    assert parent_of("fashion_mnist_k5") == "fashion_mnist"
    assert parent_of("fashion_mnist_k5_s2") == "fashion_mnist"
    assert parent_of("fashion_mnist") is None
