"""Readers of CIFAR pickles, IDX files and .npz arrays, on fixtures in their exact formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from loaders.formats import read_idx, safe_unpickle
from loaders.registry import DatasetError, get_dataset
from loaders.sources import load_source


def write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic 0x0000 08 <ndim>, big-endian dims, bytes; .gz when so named."""
    raw = (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def test_cifar10_reads_batches_in_order_with_rgb_planes(tmp_path, make_cifar):
    root, images, labels = make_cifar(tmp_path)
    data = load_source(get_dataset("cifar10", path=str(root)))
    assert data.class_names == tuple(f"class{i}" for i in range(10))
    assert (len(data.train), len(data.test), data.channels) == (100, 20, 3)
    assert np.array_equal(data.train.images, images)
    assert np.array_equal(data.train.labels, labels)


def test_cifar10_accepts_the_batches_folder_itself(tmp_path, make_cifar):
    root, images, _ = make_cifar(tmp_path)
    data = load_source(get_dataset("cifar10", path=str(root / "cifar-10-batches-py")))
    assert np.array_equal(data.train.images[:5], images[:5])


def test_cifar100_reads_fine_labels_and_names(tmp_path, make_cifar):
    root, images, labels = make_cifar(tmp_path, hundred=True)
    data = load_source(get_dataset("cifar100", path=str(root)))
    assert len(data.class_names) == 100 and data.class_names[7] == "fine7"
    assert np.array_equal(data.train.labels, labels)
    assert np.array_equal(data.train.images, images)
    assert len(data.test) == 20


def test_a_missing_cifar_batch_is_named(tmp_path, make_cifar):
    root, _, _ = make_cifar(tmp_path)
    os.remove(root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetError, match="data_batch_3: missing CIFAR file"):
        load_source(get_dataset("cifar10", path=str(root)))


def test_a_cifar_folder_that_does_not_exist_says_what_is_expected(tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"cifar-10-batches-py/batches.meta not found; expected .*data_batch_1..5",
    ):
        load_source(get_dataset("cifar10", path=str(tmp_path / "nowhere")))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_read_gzipped_or_not(tmp_path, fashion_images, suffix):
    x, y = fashion_images
    for stem, arr in (
        ("train-images-idx3-ubyte", x[:50]),
        ("train-labels-idx1-ubyte", y[:50].astype(np.uint8)),
        ("t10k-images-idx3-ubyte", x[50:60]),
        ("t10k-labels-idx1-ubyte", y[50:60].astype(np.uint8)),
    ):
        write_idx(tmp_path / (stem + suffix), arr)
    data = load_source(get_dataset("mine", source="idx", path=str(tmp_path), num_classes=10))
    assert data.train.images.shape == (50, 28, 28, 1)
    assert np.array_equal(data.train.images[..., 0], x[:50])
    assert np.array_equal(data.test.labels, y[50:60])
    assert data.class_names == tuple(str(i) for i in range(10))


def test_a_truncated_idx_file_is_named(tmp_path, fashion_images):
    path = tmp_path / "t.idx3-ubyte"
    write_idx(path, fashion_images[0][:3])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        DatasetError, match=r"t.idx3-ubyte: truncated or padded: header says \(3, 28, 28\)"
    ):
        read_idx(path)


def test_the_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Evil())))
    with pytest.raises(
        DatasetError, match="evil.pkl.gz: cannot read the pickle .*refusing to load posix.system"
    ):
        safe_unpickle(path)


def test_the_unpickler_rebuilds_arrays(tmp_path):
    path = tmp_path / "a.pkl"
    value = (np.arange(6, dtype=np.float32).reshape(2, 3), [1, 2])
    path.write_bytes(pickle.dumps(value, protocol=2))
    loaded = safe_unpickle(path)
    assert np.array_equal(loaded[0], value[0]) and loaded[1] == [1, 2]


def test_arrays_read_from_an_npz_with_class_names(tmp_path, fashion_images):
    x, y = fashion_images
    np.savez(
        tmp_path / "a.npz",
        x_train=x[:30],
        y_train=y[:30],
        x_test=x[30:40],
        y_test=y[30:40],
        class_names=np.array([f"c{i}" for i in range(10)]),
    )
    data = load_source(get_dataset("mine", source="arrays", path=str(tmp_path / "a.npz")))
    assert data.class_names[:2] == ("c0", "c1")
    assert data.train.images.shape == (30, 28, 28, 1)
    assert np.array_equal(data.test.labels, y[30:40])


def test_arrays_must_be_uint8_pixels():
    arrays = {
        "x_train": np.zeros((2, 4, 4), np.float32),
        "y_train": np.zeros(2, int),
        "x_test": np.zeros((1, 4, 4), np.uint8),
        "y_test": np.zeros(1, int),
    }
    with pytest.raises(DatasetError, match="x_train must be uint8 pixels 0..255, got float32"):
        load_source(get_dataset("mine", source="arrays"), arrays)
