"""Size controls: a parent restricted to n training images with every class kept, named
`<parent>_n<n>[_s<seed>]`, seeded, nested in n, stratified by Sainte-Lague with one image per
class first, read from the parent's files by index on both backends."""

from __future__ import annotations

import heapq
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

from loaders.pipelines import build_loaders
from loaders.prepare import prepare
from loaders.registry import (
    DatasetError,
    DatasetSpec,
    derived_options,
    expected_sizes,
    get_dataset,
    parent_of,
)
from loaders.subsets import control_indices, control_order

CAPS = dict(max_train=1200, max_test=300)


def sainte_lague_counts(counts: list[int], n: int, first: list[int]) -> list[int]:
    """The rule written out independently: one image per class (in the order `first`), then
    each next image to the class with the highest count / (2 * taken + 1), compared exactly;
    equal priorities go to the class earlier in `first`."""
    rank = {c: r for r, c in enumerate(first)}
    taken = [1] * len(counts)
    heap = [(-Fraction(c, 3), rank[i], i) for i, c in enumerate(counts) if c > 1]
    heapq.heapify(heap)
    for _ in range(n - len(counts)):
        _, r, i = heapq.heappop(heap)
        taken[i] += 1
        if taken[i] < counts[i]:
            heapq.heappush(heap, (-Fraction(counts[i], 2 * taken[i] + 1), r, i))
    return taken


@pytest.fixture(scope="module")
def fashion_labels() -> np.ndarray:
    """The 60,000 real Fashion-MNIST training labels (6,000 per class)."""
    from loaders.formats import read_idx_dataset

    (_, y), _ = read_idx_dataset(get_dataset("fashion_mnist"))
    return np.asarray(y, dtype=np.int64)


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    """The real training labels of digits (1,438 images, 142 to 146 per class)."""
    from loaders.sources import load_source

    return load_source(get_dataset("digits")).train.labels.astype(np.int64)


# ---- names and specs -----------------------------------------------------------------


def test_a_control_name_gives_parent_n_and_seed():
    spec = get_dataset("fashion_mnist_n400_s3")
    assert (spec.parent, spec.n, spec.k, spec.subset_seed) == ("fashion_mnist", 400, None, 3)
    assert (spec.num_classes, spec.source, spec.resolution) == (10, "idx", 28)
    assert (spec.is_control, spec.is_subset, spec.is_derived) == (True, False, True)
    assert get_dataset("imagenet_n64000").subset_seed == 0


def test_parent_of_and_derived_options_know_controls_and_subsets():
    assert parent_of("imagenet_n64000") == "imagenet"
    assert parent_of("fashion_mnist_n400_s2") == "fashion_mnist"
    assert derived_options("imagenet_n64000_s2") == {
        "parent": "imagenet",
        "n": 64000,
        "subset_seed": 2,
    }
    assert derived_options("imagenet_k10") == {"parent": "imagenet", "k": 10, "subset_seed": 0}
    assert derived_options("natural_images") is None


def test_a_control_by_options_or_by_name_with_parent_alone():
    by_options = get_dataset("few_shirts", parent="fashion_mnist", n=400, subset_seed=1)
    assert (by_options.n, by_options.subset_seed, by_options.num_classes) == (400, 1, 10)
    # A study names the parent it declares; the name still gives n and the seed.
    by_name = get_dataset("fashion_mnist_n400_s1", parent="fashion_mnist")
    assert (by_name.n, by_name.subset_seed) == (400, 1)


def test_a_control_round_trips_through_a_plain_dict():
    spec = get_dataset("fashion_mnist_n400", **CAPS)
    assert spec.to_dict()["n"] == 400 and "k" not in spec.to_dict()
    assert DatasetSpec.from_dict(spec.to_dict()) == spec


def test_the_parent_spec_of_a_control_is_the_parent_with_its_options():
    spec = get_dataset("fashion_mnist_n400_s2", **CAPS, backend="memory")
    assert spec.parent_spec() == get_dataset("fashion_mnist", **CAPS, backend="memory")


def test_expected_sizes_of_a_control_are_n_and_the_parents_test_split():
    assert expected_sizes(get_dataset("fashion_mnist_n400")) == (400, 10_000, 10)
    assert expected_sizes(get_dataset("fashion_mnist_n400", **CAPS)) == (400, 300, 10)
    assert expected_sizes(get_dataset("imagenet_k10")) == (12_812, 500, 10)
    assert expected_sizes(get_dataset("fashion_mnist", **CAPS)) == (1200, 300, 10)
    assert expected_sizes(get_dataset("mine", source="folder", path="/x")) == (None, None, None)


def test_describe_a_control_says_what_it_keeps():
    text = get_dataset("imagenet_n64000_s1").describe()
    assert (
        "control of imagenet: 64,000 of its training images (seed 1), every class kept in "
        "proportion, its whole test split"
    ) in text


RANGE = "the valid range 10..60,000 for a size control of 'fashion_mnist'"


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("fashion_mnist_n60001", {}, f"n=60001 is outside {RANGE}"),
        ("fashion_mnist_n9", {}, f"n=9 is outside {RANGE}"),
        ("fashion_mnist_n0", {}, f"n=0 is outside {RANGE}"),
        ("few", {"parent": "fashion_mnist", "n": -5}, f"n=-5 is outside {RANGE}"),
        ("few", {"parent": "fashion_mnist", "n": 2.5}, f"n=2.5 is not a whole number in {RANGE}"),
        (
            "fashion_mnist_n1201",
            CAPS,
            "n=1201 is outside the valid range 10..1,200 for a size control of 'fashion_mnist' "
            "(all its 10 classes, one image each at least; at most its 1,200 training images)",
        ),
        (
            "fashion_mnist_k5_n100",
            {},
            "a control of a subset ('fashion_mnist_k5' selects from 'fashion_mnist'); "
            "select from 'fashion_mnist'",
        ),
        (
            "few",
            {"parent": "fashion_mnist_n400", "n": 100},
            "a control of a control ('fashion_mnist_n400' selects from 'fashion_mnist'); "
            "select from 'fashion_mnist'",
        ),
        (
            "fashion_mnist_n400_k2",
            {},
            "a subset of a control ('fashion_mnist_n400' selects from 'fashion_mnist')",
        ),
        (
            "few",
            {"parent": "fashion_mnist", "n": 400, "k": 2},
            "k=2 (a subset's classes) and n=400 (a control's training images) exclude each other",
        ),
        ("few", {"n": 400}, "['n'] select from a parent: give parent= too"),
        (
            "few",
            {"parent": "fashion_mnist"},
            "needs k= or classes= (a subset) or n= (a size control)",
        ),
        (
            "fashion_mnist_n400",
            {"subset_seed": -1},
            "subset_seed must be a non-negative integer, not -1",
        ),
    ],
)
def test_a_bad_control_is_refused_in_one_line_naming_the_valid_choice(name, options, message):
    with pytest.raises(DatasetError, match=re.escape(message)) as caught:
        get_dataset(name, **options)
    assert "\n" not in str(caught.value)


# ---- which images: the order, nesting, stratification ----------------------------------


def test_the_counts_follow_sainte_lague_with_one_image_per_class_first():
    # Worked by hand for 6, 3 and 1 images: priorities 6/3, 6/5, 3/3, 6/7, 6/9, 3/5, 6/11.
    labels = np.repeat([0, 1, 2], [6, 3, 1])
    order = control_order(labels, 3, seed=0)
    counts = [np.bincount(labels[order[:n]], minlength=3).tolist() for n in range(3, 11)]
    assert counts == [
        [1, 1, 1],
        [2, 1, 1],
        [3, 1, 1],
        [3, 2, 1],
        [4, 2, 1],
        [5, 2, 1],
        [5, 3, 1],
        [6, 3, 1],
    ]


def test_real_imbalanced_counts_match_the_rule_written_out(digits_labels):
    counts = np.bincount(digits_labels).tolist()
    assert len(set(counts)) > 1  # digits' classes differ in size
    order = control_order(digits_labels, 10, seed=5)
    # The first round takes one image of each class in the seeded order that breaks ties.
    first = digits_labels[order[:10]].tolist()
    assert sorted(first) == list(range(10))
    for n in (10, 11, 37, 100, 333, 719, 1437, 1438):
        taken = np.bincount(digits_labels[order[:n]], minlength=10)
        assert taken.tolist() == sainte_lague_counts(counts, n, first), n
        assert np.abs(taken - n * np.array(counts) / sum(counts)).max() < 1.0


def test_balanced_classes_share_n_evenly(fashion_labels):
    for n, seed in ((400, 0), (1000, 3), (64000 // 10, 1)):
        taken = np.bincount(fashion_labels[control_indices(fashion_labels, 10, n, seed)])
        assert taken.tolist() == [n // 10] * 10
    taken = np.bincount(fashion_labels[control_indices(fashion_labels, 10, 405, 0)])
    assert sorted(taken.tolist()) == [40] * 5 + [41] * 5


def test_every_class_is_present_from_n_equal_to_the_classes(fashion_labels, digits_labels):
    for labels in (fashion_labels, digits_labels):
        for n in (10, 11, 19):
            assert np.bincount(labels[control_indices(labels, 10, n, seed=2)]).min() == 1


def test_controls_of_one_seed_are_nested_in_n(fashion_labels):
    sizes = (10, 100, 400, 401, 1000, 6000, 59_999)
    kept = [set(control_indices(fashion_labels, 10, n, seed=7).tolist()) for n in sizes]
    assert [len(k) for k in kept] == list(sizes)
    assert all(small < large for small, large in zip(kept, kept[1:], strict=False))


def test_the_images_are_a_function_of_the_seed(fashion_labels):
    first = control_indices(fashion_labels, 10, 400, seed=1)
    assert np.array_equal(first, control_indices(fashion_labels, 10, 400, seed=1))
    other = control_indices(fashion_labels, 10, 400, seed=2)
    assert len(set(first.tolist()) & set(other.tolist())) < 50  # about 400 * 400 / 60,000
    assert first.tolist() == sorted(first.tolist())


def test_ties_between_equal_classes_go_where_the_seed_says(fashion_labels):
    def favoured(seed: int) -> tuple[int, ...]:
        taken = np.bincount(fashion_labels[control_indices(fashion_labels, 10, 15, seed)])
        return tuple(np.flatnonzero(taken == 2).tolist())

    assert all(len(favoured(s)) == 5 for s in range(4))
    assert favoured(0) == favoured(0)
    assert len({favoured(s) for s in range(4)}) > 1


# ---- prepared files and loaders --------------------------------------------------------


def test_a_control_reads_its_parents_files_with_all_classes_and_labels(fashion_memory):
    before = sorted(p.name for p in fashion_memory.data_dir.iterdir())
    control = prepare(
        get_dataset("fashion_mnist_n100", **CAPS, backend="memory"),
        fashion_memory.data_dir,
        progress=False,
    )
    assert sorted(p.name for p in fashion_memory.data_dir.iterdir()) == before
    assert (control.num_train, control.num_test, control.num_classes) == (100, 300, 10)
    assert control.class_names == fashion_memory.class_names
    assert (control.label_map, control.test_indices, control.selection) == (None, None, None)
    rows = control.train_indices
    assert np.array_equal(rows, control_indices(fashion_memory.train_labels, 10, 100, 0))
    assert np.bincount(fashion_memory.train_labels[rows]).tolist() == [10] * 10


def test_a_control_trains_on_its_rows_unrelabelled_and_tests_on_the_whole_split(fashion_memory):
    control = prepare(
        get_dataset("fashion_mnist_n200_s4", **CAPS, backend="memory"),
        fashion_memory.data_dir,
        progress=False,
    )
    train, test = build_loaders(control, batch_size=200, augment="none", normalize=False)
    images, labels = next(iter(train.epoch(seed=0, epoch=0)))
    stored = np.load(fashion_memory.train_file)[control.train_indices]
    assert rows_of(images, labels) == rows_of_stored(
        stored, fashion_memory.train_labels[control.train_indices]
    )
    test_labels = torch.cat([y for _, y in test])
    assert test_labels.tolist() == fashion_memory.test_labels.tolist()


def test_a_control_checks_n_against_a_parent_the_registry_does_not_know(tmp_path, fashion_images):
    x, y = fashion_images
    arrays = {"x_train": x[:50], "y_train": y[:50], "x_test": x[50:80], "y_test": y[50:80]}
    spec = get_dataset("mine_n60", parent="mine", source="arrays", backend="memory")
    assert (spec.n, spec.num_classes) == (60, None)
    with pytest.raises(
        DatasetError,
        match=r"n=60 is outside the valid range 10..50 for a size control of 'mine' \(all its "
        r"10 classes, one image each at least; at most its 50 training images\)",
    ):
        prepare(spec, tmp_path, progress=False, arrays=arrays)


def rows_of(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, bytes]]:
    """(label, first channel's pixels) of each image, sorted: a batch as a multiset."""
    gray = images[:, 0].contiguous().numpy()
    return sorted((int(y), g.tobytes()) for g, y in zip(gray, labels.tolist(), strict=True))


def rows_of_stored(stored: np.ndarray, labels: np.ndarray) -> list[tuple[int, bytes]]:
    gray = np.ascontiguousarray(stored[..., 0])
    return sorted((int(y), g.tobytes()) for g, y in zip(gray, labels.tolist(), strict=True))


def test_the_memory_and_ffcv_backends_read_the_same_rows(tmp_path_factory, fashion_memory):
    spec = get_dataset("fashion_mnist_n100_s1", **CAPS, backend="ffcv")
    ffcv = prepare(spec, tmp_path_factory.mktemp("ffcv"), progress=False, num_workers=2)
    memory = prepare(
        get_dataset("fashion_mnist_n100_s1", **CAPS, backend="memory"),
        fashion_memory.data_dir,
        progress=False,
    )
    assert (ffcv.backend, memory.backend) == ("ffcv", "memory")
    assert np.array_equal(ffcv.train_indices, memory.train_indices)
    batches = {}
    for name, prepared in (("ffcv", ffcv), ("memory", memory)):
        train, _ = build_loaders(
            prepared, batch_size=100, augment="none", normalize=False, num_workers=1
        )
        images, labels = next(iter(train.epoch(seed=0, epoch=0)))
        assert len(train) == 1 and train.num_images == 100
        batches[name] = rows_of(images.clone(), labels.clone())
    stored = np.load(fashion_memory.train_file)[memory.train_indices]
    expected = rows_of_stored(stored, fashion_memory.train_labels[memory.train_indices])
    assert batches["ffcv"] == batches["memory"] == expected
