"""Index selection: nested seeded class subsets, label remapping, stratified splits and caps."""

from __future__ import annotations

import numpy as np
import pytest

from loaders.registry import DatasetError
from loaders.subsets import seeded_classes, select_classes, stratified_cap, stratified_split


def test_seeded_subsets_are_nested_in_k():
    k10, k100 = seeded_classes(1000, 10, seed=4), seeded_classes(1000, 100, seed=4)
    assert len(k10) == 10 and len(k100) == 100
    assert set(k10) <= set(k100)
    assert list(k100) == sorted(k100)


def test_seeds_choose_different_classes():
    assert seeded_classes(1000, 10, seed=0) != seeded_classes(1000, 10, seed=1)
    assert seeded_classes(1000, 10, seed=0) == seeded_classes(1000, 10, seed=0)


def test_the_label_map_sends_kept_classes_to_0_to_k_minus_1():
    selection = select_classes(6, [str(i) for i in range(6)], None, 0, classes=[4, 1])
    assert selection.label_map.tolist() == [-1, 1, -1, -1, 0, -1]
    labels = np.array([0, 1, 4, 4, 5, 1])
    assert selection.indices(labels).tolist() == [1, 2, 3, 5]
    assert selection.label_map[labels[selection.indices(labels)]].tolist() == [1, 0, 0, 1]


def test_classes_can_be_listed_by_name():
    selection = select_classes(3, ["cat", "dog", "eel"], None, 0, classes=["eel", "cat"])
    assert selection.classes == (2, 0)


def test_an_unknown_class_name_lists_the_classes():
    with pytest.raises(
        DatasetError, match="class 'fox' is not a class of the parent; its classes: cat, dog"
    ):
        select_classes(2, ["cat", "dog"], None, 0, classes=["fox"])


def test_a_class_index_out_of_range_is_refused():
    with pytest.raises(DatasetError, match=r"class 7 is outside the parent's classes 0..2"):
        select_classes(3, ["a", "b", "c"], None, 0, classes=[7])


def test_a_stratified_split_tests_the_same_share_of_every_class():
    labels = np.repeat([0, 1, 2], [50, 20, 10])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[test]).tolist() == [10, 4, 2]
    assert np.bincount(labels[train]).tolist() == [40, 16, 8]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(80))


def test_a_stratified_split_depends_on_its_seed_only():
    labels = np.repeat(np.arange(4), 25)
    assert np.array_equal(stratified_split(labels, 0.3, 5)[1], stratified_split(labels, 0.3, 5)[1])
    assert not np.array_equal(
        stratified_split(labels, 0.3, 5)[1], stratified_split(labels, 0.3, 6)[1]
    )


def test_a_cap_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    kept = stratified_cap(labels, 100, seed=0)
    assert len(kept) == 100
    assert np.bincount(labels[kept]).tolist() == [60, 30, 10]
    assert kept.tolist() == sorted(kept.tolist())


def test_a_cap_above_the_size_keeps_everything():
    assert stratified_cap(np.zeros(7, dtype=np.int64), 50, seed=0).tolist() == list(range(7))
