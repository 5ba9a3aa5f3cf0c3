"""The memory backend: prepared .npy files, deterministic seeded epochs on the device,
shapes, dtypes, normalisation and subset remapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loaders.pipelines import build_loaders
from loaders.prepare import choose_backend, prepare
from loaders.registry import get_dataset


def batches(loader_epoch):
    return [(x.clone(), y.clone()) for x, y in loader_epoch]


def test_prepare_writes_uint8_images_at_the_training_resolution(fashion_memory):
    images = np.load(fashion_memory.train_file)
    assert (images.shape, images.dtype) == ((1200, 28, 28, 1), np.uint8)
    assert fashion_memory.backend == "memory"
    assert (
        np.load(fashion_memory.train_file.with_name("fashion_mnist.train.labels.npy")).dtype
        == np.int64
    )


def test_prepare_keeps_the_caps_stratified(fashion_memory):
    assert (fashion_memory.num_train, fashion_memory.num_test) == (1200, 300)
    assert np.bincount(fashion_memory.train_labels).tolist() == [120] * 10


def test_prepare_again_writes_nothing(fashion_memory):
    before = {p: p.stat().st_mtime_ns for p in fashion_memory.data_dir.iterdir()}
    again = prepare(fashion_memory.spec, fashion_memory.data_dir, progress=False)
    assert {p: p.stat().st_mtime_ns for p in fashion_memory.data_dir.iterdir()} == before
    assert again == fashion_memory


def test_an_epoch_is_the_same_for_the_same_seed_and_epoch(fashion_memory):
    train, _ = build_loaders(fashion_memory, batch_size=100)
    first, second = batches(train.epoch(seed=3, epoch=2)), batches(train.epoch(seed=3, epoch=2))
    assert len(first) == len(train) == 12
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )


def test_another_epoch_or_seed_draws_another_order_and_crops(fashion_memory):
    train, _ = build_loaders(fashion_memory, batch_size=100)
    base = next(iter(train.epoch(seed=3, epoch=2)))
    for other in (
        next(iter(train.epoch(seed=3, epoch=3))),
        next(iter(train.epoch(seed=4, epoch=2))),
    ):
        assert not torch.equal(base[1], other[1])
        assert not torch.equal(base[0], other[0])


def test_train_batches_are_float32_nchw_with_3_channels(fashion_memory):
    train, _ = build_loaders(fashion_memory, batch_size=64, resolution=32)
    images, labels = next(iter(train.epoch(seed=0, epoch=0)))
    assert (images.shape, images.dtype) == ((64, 3, 32, 32), torch.float32)
    assert (labels.shape, labels.dtype) == ((64,), torch.int64)
    assert torch.equal(images[:, 0], images[:, 2])  # grayscale replicated
    assert labels.min() >= 0 and labels.max() <= 9


def test_an_epoch_visits_each_image_at_most_once(fashion_memory):
    train, _ = build_loaders(fashion_memory, batch_size=128)
    labels = torch.cat([y for _, y in train.epoch(seed=1, epoch=0)])
    assert len(labels) == 128 * (1200 // 128) == train.num_images // 128 * 128
    counts = torch.bincount(labels, minlength=10)
    assert counts.sum() == 1152 and counts.max() <= 120


def test_test_batches_are_the_normalised_stored_images_in_order(fashion_memory):
    _, test = build_loaders(fashion_memory, batch_size=128)
    images = torch.cat([x for x, _ in test])
    labels = torch.cat([y for _, y in test])
    stored = torch.from_numpy(np.load(fashion_memory.test_file)).permute(0, 3, 1, 2).float()
    mean, std = fashion_memory.mean[0], fashion_memory.std[0]
    assert len(test) == 3 and images.shape == (300, 3, 28, 28)
    assert torch.allclose(images[:, 1:2], (stored - mean) / std, atol=1e-6)
    assert labels.tolist() == fashion_memory.test_labels.tolist()


def test_the_normalisation_standardises_the_training_images(fashion_memory):
    _, test = build_loaders(fashion_memory, batch_size=300)
    images, _ = next(iter(test))
    assert abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1.0) < 0.05


def test_uint8_batches_without_normalisation(fashion_memory):
    _, test = build_loaders(fashion_memory, batch_size=300, normalize=False)
    images, _ = next(iter(test))
    stored = torch.from_numpy(np.load(fashion_memory.test_file)).permute(0, 3, 1, 2)
    assert images.dtype == torch.uint8 and torch.equal(images[:, :1], stored)


def test_a_subset_remaps_labels_and_keeps_its_classes_only(fashion_memory):
    spec = get_dataset("fashion_mnist_k3", max_train=1200, max_test=300, backend="memory")
    subset = prepare(spec, fashion_memory.data_dir, progress=False)
    kept = subset.selection.classes
    assert subset.class_names == tuple(fashion_memory.class_names[c] for c in kept)
    assert (subset.num_train, subset.num_test) == (360, 90)
    train, test = build_loaders(subset, batch_size=50)
    images, labels = zip(*[(x, y) for x, y in test], strict=True)
    assert torch.bincount(torch.cat(labels)).tolist() == [30, 30, 30]
    parent_rows = np.flatnonzero(np.isin(fashion_memory.test_labels, kept))
    stored = (
        torch.from_numpy(np.load(fashion_memory.test_file)[parent_rows]).permute(0, 3, 1, 2).float()
    )
    expected = (stored - fashion_memory.mean[0]) / fashion_memory.std[0]
    assert torch.allclose(torch.cat(images)[:, :1], expected, atol=1e-6)
    train_labels = torch.cat([y for _, y in train.epoch(seed=0, epoch=0)])
    assert set(train_labels.tolist()) == {0, 1, 2} and len(train) == 7


def test_a_subset_needs_no_files_of_its_own(fashion_memory):
    spec = get_dataset("fashion_mnist_k4_s1", max_train=1200, max_test=300, backend="memory")
    before = sorted(p.name for p in fashion_memory.data_dir.iterdir())
    prepare(spec, fashion_memory.data_dir, progress=False)
    assert sorted(p.name for p in fashion_memory.data_dir.iterdir()) == before


@pytest.mark.parametrize("augment", ["rrc", "pad_crop", "flip", "none"])
def test_every_augmentation_gives_training_batches_of_the_resolution(fashion_memory, augment):
    train, _ = build_loaders(fashion_memory, batch_size=32, resolution=24, augment=augment)
    images, _ = next(iter(train.epoch(seed=0, epoch=0)))
    assert images.shape == (32, 3, 24, 24) and torch.isfinite(images).all()


def test_auto_chooses_memory_when_the_train_set_fits():
    small = get_dataset("cifar10")
    assert choose_backend(small, 50_000, 3) == "memory"
    assert choose_backend(get_dataset("imagenet"), 1_281_167, 3) == "ffcv"
    assert choose_backend(get_dataset("imagenet", backend="memory"), 1_281_167, 3) == "memory"


def test_a_backend_the_data_was_not_prepared_for_is_refused(fashion_memory):
    with pytest.raises(
        ValueError, match="prepared for the memory backend; prepare it with backend='ffcv'"
    ):
        build_loaders(fashion_memory, backend="ffcv")
